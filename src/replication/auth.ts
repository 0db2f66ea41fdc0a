/**
 * Mutual authentication of a primary and a standby before anything of the store flows: an
 * HMAC-SHA256 challenge–response over a pre-shared secret, with a fresh nonce from each side.
 *
 * - The standby sends its nonce `Ns` (with the store id it already follows, or none, and the
 *   epoch it has seen); the primary answers with its own nonce `Np` and nothing else.
 * - The standby proves the secret: `HMAC(secret, "standby" | Ns | Np | storeId | epoch | id)`.
 *   The primary checks it (constant-time) before sending a single byte about the store. A
 *   recorded handshake replayed later fails: `Np` is new on every connection.
 * - The primary proves the secret back: `HMAC(secret, "primary" | Np | Ns | its storeId | its
 *   epoch)`; a fake primary replaying an old answer fails against the standby's fresh `Ns`.
 * - Both MACs cover the store id, so a standby of another store (or a primary of another store)
 *   is refused even when the secret is shared.
 *
 * Fields are joined as a JSON array (length-unambiguous), labelled per direction so one side's
 * MAC can never be reflected as the other's.
 *
 * @module
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { AuthenticationError } from "../errors.ts";

/** Bytes of a nonce. */
export const NONCE_BYTES = 32;
/** Shortest secret accepted, bytes: a short secret falls to an offline guess from one recorded handshake. */
export const MIN_SECRET_BYTES = 16;
/** Longest secret accepted, bytes. */
export const MAX_SECRET_BYTES = 4096;

/** The pre-shared secret as bytes, checked. */
export function secretBytes(secret: unknown, side: "primary" | "standby"): Uint8Array {
  if (secret === undefined || secret === null || secret === "") {
    throw new AuthenticationError(`replication needs a pre-shared secret on the ${side} (option "secret")`);
  }
  const bytes = typeof secret === "string" ? new TextEncoder().encode(secret) : secret instanceof Uint8Array ? secret : undefined;
  if (bytes === undefined) throw new AuthenticationError(`the replication secret must be a string or a Uint8Array`);
  if (bytes.length < MIN_SECRET_BYTES || bytes.length > MAX_SECRET_BYTES) {
    throw new AuthenticationError(`the replication secret must be ${MIN_SECRET_BYTES}..${MAX_SECRET_BYTES} bytes, got ${bytes.length}`);
  }
  return bytes;
}

/** A fresh nonce, hex. */
export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString("hex");
}

/** A nonce received from the peer, checked. */
export function checkNonce(value: string, who: string): string {
  if (!/^[0-9a-f]+$/.test(value) || value.length !== NONCE_BYTES * 2) throw new AuthenticationError(`the ${who}'s nonce is malformed`);
  return value;
}

function mac(secret: Uint8Array, fields: ReadonlyArray<string | number>): string {
  return createHmac("sha256", secret).update(JSON.stringify(fields)).digest("hex");
}

/** What the standby's MAC covers. */
export interface StandbyProof {
  readonly standbyNonce: string;
  readonly primaryNonce: string;
  /** The store the standby follows already ("" for a brand-new standby). */
  readonly storeId: string;
  readonly epoch: number;
  readonly standbyId: string;
}

/** What the primary's MAC covers. */
export interface PrimaryProof {
  readonly standbyNonce: string;
  readonly primaryNonce: string;
  readonly storeId: string;
  readonly epoch: number;
}

export function standbyMac(secret: Uint8Array, p: StandbyProof): string {
  return mac(secret, ["bloom-lss replication standby v1", p.standbyNonce, p.primaryNonce, p.storeId, p.epoch, p.standbyId]);
}

export function primaryMac(secret: Uint8Array, p: PrimaryProof): string {
  return mac(secret, ["bloom-lss replication primary v1", p.primaryNonce, p.standbyNonce, p.storeId, p.epoch]);
}

/** Constant-time comparison of a received MAC with the expected one. */
export function macMatches(received: unknown, expected: string): boolean {
  if (typeof received !== "string" || received.length !== expected.length || !/^[0-9a-f]+$/.test(received)) return false;
  return timingSafeEqual(Buffer.from(received, "hex"), Buffer.from(expected, "hex"));
}
