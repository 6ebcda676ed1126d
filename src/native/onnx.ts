/**
 * A minimal ONNX model writer: the protobuf wire format of the few messages a forward graph needs
 * (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto), written by
 * hand so that no code generator or schema file is needed. Weights go in as raw_data
 * initializers, so the runtime sees them as constants and prepacks them once per session.
 * Field numbers follow onnx/onnx.proto.
 */

/** Growable byte sink for protobuf fields. */
class Writer {
  private buf = new Uint8Array(256);
  length = 0;

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.length++] = b;
  }

  /** Unsigned or negative (two's complement, ten bytes) varint. */
  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.byte(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.byte(Number(x));
  }

  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, v: number | bigint): void {
    this.tag(field, 0);
    this.varint(v);
  }

  float(field: number, v: number): void {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.bytes(b);
  }

  blob(field: number, b: Uint8Array): void {
    this.tag(field, 2);
    this.varint(b.length);
    this.bytes(b);
  }

  string(field: number, s: string): void {
    this.blob(field, new TextEncoder().encode(s));
  }

  message(field: number, m: Writer): void {
    this.blob(field, m.finish());
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/** TensorProto.DataType values used here. */
export const DataType = { float: 1, int64: 7 } as const;

export type AttrValue = number | number[] | string | { float: number };

/** A node of the graph: op_type with named inputs and outputs and attributes (integers unless {float}). */
export interface OnnxNode {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs?: Record<string, AttrValue>;
  domain?: string;
}

export interface OnnxInitializer {
  name: string;
  dims: number[];
  data: Float32Array | BigInt64Array;
}

/** A graph input or output: f32 or int64, each dim fixed (number) or symbolic (string). */
export interface OnnxValueInfo {
  name: string;
  type: keyof typeof DataType;
  dims: (number | string)[];
}

export interface OnnxGraph {
  name: string;
  nodes: OnnxNode[];
  initializers: OnnxInitializer[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  /** Default-domain opset version. */
  opset: number;
}

function attribute(name: string, v: AttrValue): Writer {
  const a = new Writer();
  a.string(1, name);
  if (typeof v === 'string') {
    a.blob(4, new TextEncoder().encode(v));
    a.int(20, 3); // STRING
  } else if (typeof v === 'number') {
    a.int(3, v);
    a.int(20, 2); // INT
  } else if (Array.isArray(v)) {
    for (const x of v) a.int(8, x);
    a.int(20, 7); // INTS
  } else {
    a.float(2, v.float);
    a.int(20, 1); // FLOAT
  }
  return a;
}

function tensor(t: OnnxInitializer): Writer {
  const w = new Writer();
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.data instanceof Float32Array ? DataType.float : DataType.int64);
  w.string(8, t.name);
  w.blob(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)); // raw_data, little-endian
  return w;
}

function valueInfo(v: OnnxValueInfo): Writer {
  const shape = new Writer();
  for (const d of v.dims) {
    const dim = new Writer();
    if (typeof d === 'number') dim.int(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new Writer();
  tensorType.int(1, DataType[v.type]);
  tensorType.message(2, shape);
  const type = new Writer();
  type.message(1, tensorType);
  const w = new Writer();
  w.string(1, v.name);
  w.message(2, type);
  return w;
}

/** Serialises a graph as an ONNX ModelProto (IR version 8). */
export function encodeModel(g: OnnxGraph): Uint8Array {
  const graph = new Writer();
  g.nodes.forEach((n, k) => {
    const node = new Writer();
    for (const i of n.inputs) node.string(1, i);
    for (const o of n.outputs) node.string(2, o);
    node.string(3, `${n.op}_${k}`);
    node.string(4, n.op);
    for (const [name, v] of Object.entries(n.attrs ?? {})) node.message(5, attribute(name, v));
    if (n.domain) node.string(7, n.domain);
    graph.message(1, node);
  });
  graph.string(2, g.name);
  for (const t of g.initializers) graph.message(5, tensor(t));
  for (const v of g.inputs) graph.message(11, valueInfo(v));
  for (const v of g.outputs) graph.message(12, valueInfo(v));
  const model = new Writer();
  model.int(1, 8); // ir_version
  model.string(2, 'charon');
  model.message(7, graph);
  const opset = new Writer();
  opset.string(1, '');
  opset.int(2, g.opset);
  model.message(8, opset);
  return model.finish();
}

/**
 * Builds a graph node by node: fresh value names, constants as initializers. Keeps graph builders
 * short and readable (one line per op).
 */
export class GraphBuilder {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxInitializer[] = [];
  private n = 0;

  /** Adds node `op` and returns its (single) output name. */
  op(op: string, inputs: string[], attrs?: Record<string, AttrValue>): string {
    const out = `${op.toLowerCase()}_${this.n++}`;
    this.nodes.push({ op, inputs, outputs: [out], ...(attrs ? { attrs } : {}) });
    return out;
  }

  /** Adds an initializer and returns its name. */
  init(name: string, dims: number[], data: Float32Array | BigInt64Array): string {
    this.initializers.push({ name, dims, data });
    return name;
  }

  f32(value: number): string {
    return this.init(`c${this.n++}`, [], Float32Array.of(value));
  }

  i64(values: number[]): string {
    return this.init(
      `c${this.n++}`,
      [values.length],
      BigInt64Array.from(values, (v) => BigInt(v)),
    );
  }
}
