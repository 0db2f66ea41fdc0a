/**
 * Alloc records: the high-water mark of each seid space, so that a seid handed out before a crash
 * is never handed out again after it. Body: (u32 space, u32 pad, f64 next) per space.
 *
 * @module
 */

/** Bytes of one Alloc entry. */
export const ALLOC_ENTRY_BYTES = 16;

/** Encode Alloc entries ([space, next seid]). */
export function encodeAlloc(entries: ReadonlyArray<readonly [number, number]>): Uint8Array {
  const body = new Uint8Array(entries.length * ALLOC_ENTRY_BYTES);
  const view = new DataView(body.buffer);
  entries.forEach(([space, next], i) => {
    view.setUint32(i * ALLOC_ENTRY_BYTES, space, true);
    view.setFloat64(i * ALLOC_ENTRY_BYTES + 8, next, true);
  });
  return body;
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
