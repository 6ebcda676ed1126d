/**
 * A tensor as it travels: dtype, shape and a typed array over its raw little-endian elements.
 * Construction checks that shape and data agree, so a WireTensor that exists is consistent.
 */
import { bytesPerElement, isDType, matchesDType, type DType, type TypedArrayOf } from './dtype.ts';

/** Largest rank accepted on the wire. */
export const MAX_RANK = 8;

export class WireTensor<D extends DType = DType> {
  /** Number of elements (product of the shape; 1 for a scalar, shape []). */
  readonly size: number;

  /**
   * @throws TypeError when the dtype is unknown, a dim is not a non-negative integer, the rank
   * exceeds MAX_RANK, `data` is not the typed array of `dtype`, or its length is not the shape's size.
   */
  constructor(
    readonly dtype: D,
    readonly shape: readonly number[],
    readonly data: TypedArrayOf[D],
  ) {
    if (!isDType(dtype)) throw new TypeError(`unknown dtype '${String(dtype)}'`);
    this.size = shapeSize(shape);
    if (!matchesDType(dtype, data)) throw new TypeError(`dtype ${dtype} cannot hold a ${data.constructor.name}`);
    if (data.length !== this.size) throw new TypeError(`shape [${shape.join(', ')}] needs ${this.size} elements, data has ${data.length}`);
  }

  /** The elements' bytes, as a view (no copy). */
  bytes(): Uint8Array {
    return new Uint8Array(this.data.buffer, this.data.byteOffset, this.data.byteLength);
  }

  get byteLength(): number {
    return this.size * bytesPerElement(this.dtype);
  }
}

/** Product of dims; validates each dim (non-negative safe integer) and the rank. */
export function shapeSize(shape: readonly number[]): number {
  if (!Array.isArray(shape)) throw new TypeError('shape must be an array');
  if (shape.length > MAX_RANK) throw new TypeError(`rank ${shape.length} exceeds ${MAX_RANK}`);
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new TypeError(`dim ${String(d)} is not a non-negative integer`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new TypeError(`shape [${shape.join(', ')}] is too large`);
  return n;
}
