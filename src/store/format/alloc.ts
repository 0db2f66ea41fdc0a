/**
 * Alloc records: the high-water mark of each seid space, so that a seid handed out before a crash
 * is never handed out again after it. Body: (u32 space, u32 pad, f64 next) per space.
 *
 * @module
 */

/** Bytes of one Alloc entry. */
export const ALLOC_ENTRY_BYTES = 16;

/**
 * Where {@link encodeAlloc} encodes, grown as needed: a DataView over a fresh array's `.buffer`
 * made the engine create that ArrayBuffer on every commit (CPU profile of relaxed 100 B
 * commits: `get buffer` 7.7 % of the samples, here and in encodeCommitBody).
 */
let scratch = new Uint8Array(ALLOC_ENTRY_BYTES * 8);
let scratchView = new DataView(scratch.buffer);

/** Encode Alloc entries ([space, next seid]) into a new array. */
export function encodeAlloc(entries: ReadonlyArray<readonly [number, number]>): Uint8Array {
  const bytes = entries.length * ALLOC_ENTRY_BYTES;
  if (bytes > scratch.length) {
    scratch = new Uint8Array(Math.max(bytes, scratch.length * 2));
    scratchView = new DataView(scratch.buffer);
  }
  scratch.fill(0, 0, bytes); // the pad words
  for (let i = 0; i < entries.length; i++) {
    const [space, next] = entries[i] as readonly [number, number];
    scratchView.setUint32(i * ALLOC_ENTRY_BYTES, space, true);
    scratchView.setFloat64(i * ALLOC_ENTRY_BYTES + 8, next, true);
  }
  return scratch.slice(0, bytes);
}

/** Decode an Alloc record body. */
export function decodeAlloc(body: Uint8Array): Array<[number, number]> {
  const view = new DataView(body.buffer, body.byteOffset, body.length);
  const out: Array<[number, number]> = [];
  for (let at = 0; at + ALLOC_ENTRY_BYTES <= body.length; at += ALLOC_ENTRY_BYTES) {
    out.push([view.getUint32(at, true), view.getFloat64(at + 8, true)]);
  }
  return out;
}
