/**
 * A structural check of msgpack bytes before they are unpacked. A decoder allocates what a header
 * declares (an array of 100 million slots, say) before it finds that the bytes to fill it are not
 * there, and recurses once per nesting level; this walk, which allocates nothing, refuses both
 * first: every declared count or length must fit in the bytes that remain (each element takes at
 * least one byte), nesting stays under `maxDepth`, and the bytes hold exactly one value.
 */
import { MessageRejected } from './rejected.ts';

/** Deepest nesting of arrays and maps an envelope may have. */
export const MAX_DEPTH = 64;

/**
 * @throws MessageRejected 'truncated' when the bytes end inside a value or before a declared
 * length, 'malformed' for an invalid byte, too deep a nesting or trailing bytes.
 */
export function checkMsgpack(bytes: Uint8Array, maxDepth = MAX_DEPTH): void {
  const end = bytes.length;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  /** items still to read in each open container (outermost first) */
  const open: number[] = [1];
  let pos = 0;
  const need = (n: number, what: string) => {
    if (pos + n > end) throw new MessageRejected('truncated', `${what} at byte ${pos} needs ${n} bytes, ${end - pos} remain`);
  };
  const len = (width: 1 | 2 | 4) => {
    need(width, 'length');
    const n = width === 1 ? view.getUint8(pos) : width === 2 ? view.getUint16(pos) : view.getUint32(pos);
    pos += width;
    return n;
  };
  const skip = (n: number, what: string) => {
    if (n > end - pos) throw new MessageRejected('truncated', `${what} declares ${n} bytes at byte ${pos}, ${end - pos} remain`);
    pos += n;
  };
  const container = (items: number, what: string) => {
    if (items > end - pos)
      throw new MessageRejected('truncated', `${what} declares ${items} items at byte ${pos}, ${end - pos} bytes remain`);
    if (open.length > maxDepth) throw new MessageRejected('malformed', `nesting deeper than ${maxDepth} levels`);
    open.push(items);
  };
  while (open.length > 0) {
    // Containers whose items are all read are closed; what remains open is the nesting depth.
    if (open[open.length - 1] === 0) {
      open.pop();
      continue;
    }
    open[open.length - 1]!--;
    need(1, 'value');
    const b = view.getUint8(pos++);
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) continue;
    if (b <= 0x8f) container(2 * (b & 0x0f), 'map');
    else if (b <= 0x9f) container(b & 0x0f, 'array');
    else if (b <= 0xbf) skip(b & 0x1f, 'string');
    else if (b === 0xc1) throw new MessageRejected('malformed', `invalid msgpack byte 0xc1 at ${pos - 1}`);
    else if (b <= 0xc6) skip(len(b === 0xc4 ? 1 : b === 0xc5 ? 2 : 4), 'binary');
    else if (b <= 0xc9) skip(len(b === 0xc7 ? 1 : b === 0xc8 ? 2 : 4) + 1, 'extension');
    else if (b <= 0xd3) skip([4, 8, 1, 2, 4, 8, 1, 2, 4, 8][b - 0xca]!, 'number');
    else if (b <= 0xd8) skip(1 + [1, 2, 4, 8, 16][b - 0xd4]!, 'extension');
    else if (b <= 0xdb) skip(len(b === 0xd9 ? 1 : b === 0xda ? 2 : 4), 'string');
    else if (b <= 0xdd) container(len(b === 0xdc ? 2 : 4), 'array');
    else container(2 * len(b === 0xde ? 2 : 4), 'map');
  }
  if (pos !== end) throw new MessageRejected('malformed', `${end - pos} bytes after the envelope`);
}
