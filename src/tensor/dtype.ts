/**
 * Tensor element types on the wire. Half-precision types travel as raw 16-bit patterns
 * (Uint16Array); `bool` travels as one byte per element (0 or 1).
 */

export const DTYPES = ['float32', 'float16', 'bfloat16', 'float64', 'int8', 'int16', 'int32', 'uint8', 'uint16', 'uint32', 'bool'] as const;
export type DType = (typeof DTYPES)[number];

/** The typed array that holds each dtype's elements. */
export interface TypedArrayOf {
  float32: Float32Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  float64: Float64Array;
  int8: Int8Array;
  int16: Int16Array;
  int32: Int32Array;
  uint8: Uint8Array;
  uint16: Uint16Array;
  uint32: Uint32Array;
  bool: Uint8Array;
}
export type TensorData = TypedArrayOf[DType];

type Ctor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): TensorData;
  new (length: number): TensorData;
  BYTES_PER_ELEMENT: number;
};

const CTORS: Record<DType, Ctor> = {
  float32: Float32Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  bool: Uint8Array,
} as Record<DType, Ctor>;

/** Wire code of each dtype: its index in DTYPES (stable; append only). */
export function dtypeCode(dtype: DType): number {
  return DTYPES.indexOf(dtype);
}
export function dtypeFromCode(code: number): DType | undefined {
  return DTYPES[code];
}
export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}
export function bytesPerElement(dtype: DType): number {
  return CTORS[dtype].BYTES_PER_ELEMENT;
}
export function typedArrayCtor(dtype: DType): Ctor {
  return CTORS[dtype];
}

/** True when `data` is the typed array class that carries `dtype`. */
export function matchesDType(dtype: DType, data: ArrayBufferView): boolean {
  return data.constructor === CTORS[dtype];
}
