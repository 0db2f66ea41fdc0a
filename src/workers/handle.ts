/**
 * The handle `store.share()` returns: plain data and SharedArrayBuffers only, so
 * `worker.postMessage(handle)` carries it with no transfer list. It grants access to the store:
 * hand it only to Workers of this process (the socket it names is checked with its secret).
 *
 * @module
 */
import type { IoKind } from "../io/backend.ts";
import type { RingDescriptor } from "../log/ring.ts";
import type { SharedMappingBuffers } from "./shared-state.ts";

/** A store shared with Workers: pass to `Store.attach()` inside a Worker of the same process. */
export interface StoreHandle {
  readonly kind: "bloom-lss/shared-store";
  readonly version: 1;
  /** The store's file. */
  readonly path: string;
  /** Abstract Unix socket of the owner thread (begins with a NUL byte). */
  readonly socket: string;
  /** Proves to the owner that the attacher got the handle (hex). */
  readonly secret: string;
  /** The transaction turn (turn.ts). */
  readonly turn: SharedArrayBuffer;
  readonly mapping: SharedMappingBuffers;
  readonly segments: SharedArrayBuffer;
  readonly pins: SharedArrayBuffer;
  readonly stats: SharedArrayBuffer;
  /** The log's flush buffers, for reading bytes not yet written to the file. */
  readonly ring: RingDescriptor;
  readonly segmentSize: number;
  readonly maxReadBytes: number;
  readonly cacheBytes: number;
  readonly durability: "sync" | "relaxed";
  readonly readOnly: boolean;
  /** The owner's I/O backend (`store.io`). */
  readonly io: IoKind;
  /** Int32 [0]: the number of seid spaces (they are 0 … n − 1), kept current by the owner. */
  readonly spaces: SharedArrayBuffer;
}

/** Throws unless `value` looks like a {@link StoreHandle}. */
export function isStoreHandle(value: unknown): value is StoreHandle {
  if (typeof value !== "object" || value === null) return false;
  const handle = value as Partial<StoreHandle>;
  return (
    handle.kind === "bloom-lss/shared-store" &&
    handle.version === 1 &&
    typeof handle.socket === "string" &&
    typeof handle.secret === "string" &&
    handle.turn instanceof SharedArrayBuffer &&
    handle.segments instanceof SharedArrayBuffer &&
    handle.pins instanceof SharedArrayBuffer &&
    handle.spaces instanceof SharedArrayBuffer &&
    typeof handle.ring === "object" &&
    handle.ring !== null
  );
}
