/** Test-only byte helpers. Not a test file itself. */

/**
 * Bytes of a hex string; whitespace is ignored so vectors can be written in groups. Throws on
 * anything that is not whole hex bytes (Buffer.from would silently drop it).
 */
export function hex(text: string): Uint8Array {
  const h = text.replace(/\s+/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(h)) throw new Error(`test hex literal is not whole hex bytes: ${h.slice(0, 40)}`);
  return Uint8Array.from(Buffer.from(h, 'hex'));
}

/** Lower-case hex of exactly the view's bytes (not its whole underlying buffer). */
export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}
