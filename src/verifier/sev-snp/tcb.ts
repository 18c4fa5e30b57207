/**
 * SEV-SNP TCB_VERSION: a 64-bit little-endian value whose byte layout depends on the product.
 *
 * - Milan and Genoa (SEV-SNP ABI spec 56860, "TCB_VERSION Structure"): byte 0 BOOT_LOADER,
 *   1 TEE, 2..5 reserved, 6 SNP, 7 MICROCODE.
 * - Turin (family 1Ah; same spec, Turin layout): byte 0 FMC, 1 BOOT_LOADER, 2 TEE, 3 SNP,
 *   4..6 reserved, 7 MICROCODE.
 *
 * The VCEK carries the same SPL values as X.509 extensions (AMD VCEK spec 57230, table
 * "VCEK Certificate Extensions"): 1.3.6.1.4.1.3704.1.3.1 blSPL, .3.2 teeSPL, .3.3 snpSPL,
 * .3.4..3.7 spl_4..spl_7 (reserved), .3.8 ucodeSPL, .3.9 fmcSPL (Turin only).
 */
import { CloisterError } from '../../errors.js';

export type SnpProduct = 'Milan' | 'Genoa' | 'Turin';

export const SNP_PRODUCTS: readonly SnpProduct[] = ['Milan', 'Genoa', 'Turin'];

export interface SnpTcbParts {
  readonly bootloader: number;
  readonly tee: number;
  readonly snp: number;
  readonly microcode: number;
  /** Turin only. */
  readonly fmc?: number;
}

function byteAt(b: Uint8Array, i: number): number {
  const v = b[i];
  if (v === undefined) throw new CloisterError('INTERNAL', 'TCB byte index out of range');
  return v;
}

/** Decode the 8 raw little-endian bytes of a TCB_VERSION for a product. */
export function decodeTcb(raw: Uint8Array, product: SnpProduct): SnpTcbParts {
  if (raw.byteLength !== 8) {
    throw new CloisterError('INVALID_ARGUMENT', 'TCB_VERSION must be 8 bytes', { detail: { length: raw.byteLength } });
  }
  if (product === 'Turin') {
    return { fmc: byteAt(raw, 0), bootloader: byteAt(raw, 1), tee: byteAt(raw, 2), snp: byteAt(raw, 3), microcode: byteAt(raw, 7) };
  }
  return { bootloader: byteAt(raw, 0), tee: byteAt(raw, 1), snp: byteAt(raw, 6), microcode: byteAt(raw, 7) };
}

function spl(v: number | undefined, name: string): number {
  if (v === undefined || !Number.isInteger(v) || v < 0 || v > 255) {
    throw new CloisterError('INVALID_ARGUMENT', `TCB component ${name} must be an integer 0..255`, { detail: { field: name } });
  }
  return v;
}

/** Encode TCB parts into the 8 raw bytes for a product; reserved bytes are zero. */
export function encodeTcb(parts: SnpTcbParts, product: SnpProduct): Uint8Array {
  const out = new Uint8Array(8);
  if (product === 'Turin') {
    out[0] = spl(parts.fmc, 'fmc');
    out[1] = spl(parts.bootloader, 'bootloader');
    out[2] = spl(parts.tee, 'tee');
    out[3] = spl(parts.snp, 'snp');
    out[7] = spl(parts.microcode, 'microcode');
  } else {
    if (parts.fmc !== undefined) {
      throw new CloisterError('INVALID_ARGUMENT', 'fmc exists only in the Turin TCB layout', { detail: { product } });
    }
    out[0] = spl(parts.bootloader, 'bootloader');
    out[1] = spl(parts.tee, 'tee');
    out[6] = spl(parts.snp, 'snp');
    out[7] = spl(parts.microcode, 'microcode');
  }
  return out;
}

/**
 * True when every component of `actual` is >= the same component of `minimum`.
 * SVNs are compared per component, never as one 64-bit number: a higher microcode SPL must
 * not make up for a lower SNP firmware SPL.
 */
export function tcbAtLeast(actual: SnpTcbParts, minimum: Partial<SnpTcbParts>): boolean {
  const keys = ['bootloader', 'tee', 'snp', 'microcode', 'fmc'] as const;
  for (const k of keys) {
    const min = minimum[k];
    if (min === undefined) continue;
    const have = actual[k];
    if (have === undefined || have < min) return false;
  }
  return true;
}
