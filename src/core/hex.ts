/** Strict hex helpers for measurements and policy values (internal to attestation). */
import { CloisterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/**
 * Decode hex with an exact expected length in bytes (or any length when undefined).
 * Rejects odd lengths, non-hex characters and prefixes such as "0x".
 */
export function fromHex(text: string, bytes: number | undefined, what: string, code: ErrorCode = 'INVALID_ARGUMENT'): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(text)) throw new CloisterError(code, `${what} is not an even-length hex string`);
  if (bytes !== undefined && text.length !== bytes * 2) {
    throw new CloisterError(code, `${what} must be ${bytes} bytes (${bytes * 2} hex digits)`, { detail: { expected: bytes, got: text.length / 2 } });
  }
  return new Uint8Array(Buffer.from(text, 'hex'));
}

export function isAllZero(b: Uint8Array): boolean {
  let acc = 0;
  for (const x of b) acc |= x;
  return acc === 0;
}
