/**
 * The Enclave Image File (EIF) format, as defined by aws-nitro-enclaves-image-format
 * (src/defs/mod.rs, CURRENT_VERSION 4). All integers are big-endian.
 *
 * EifHeader (548 bytes):
 *   magic ".eif" | version u16 | flags u16 | default_mem u64 | default_cpus u64 |
 *   reserved u16 | num_sections u16 | section_offsets [u64; 32] | section_sizes [u64; 32] |
 *   unused u32 | eif_crc32 u32
 * EifSectionHeader (12 bytes): section_type u16 | flags u16 | section_size u64, then the data.
 * section_offsets[i] points at section i's header; section_sizes[i] is its data length.
 * eif_crc32 is CRC-32/ISO-HDLC over the whole file except that field, in file order.
 */
export const EIF_MAGIC = Uint8Array.of(0x2e, 0x65, 0x69, 0x66); // ".eif"
export const EIF_HEADER_SIZE = 548;
export const EIF_SECTION_HEADER_SIZE = 12;
export const EIF_MAX_SECTIONS = 32;
/** V1 had no CRC; V2 added it, V3 the signature section, V4 the metadata section. */
export const EIF_MIN_VERSION = 2;
export const EIF_MAX_VERSION = 4;
/** EifHeader flags bit 0: aarch64 image (cleared for x86_64). */
export const EIF_HDR_ARCH_ARM64 = 0x1;

/** EifSectionType, in declaration order (0 is EifSectionInvalid). */
export const EIF_SECTION_TYPES = {
  1: 'kernel',
  2: 'cmdline',
  3: 'ramdisk',
  4: 'signature',
  5: 'metadata',
} as const;
export type EifSectionKind = (typeof EIF_SECTION_TYPES)[keyof typeof EIF_SECTION_TYPES];

export interface EifHeader {
  readonly version: number;
  readonly flags: number;
  readonly defaultMem: bigint;
  readonly defaultCpus: bigint;
  readonly reserved: number;
  readonly numSections: number;
  readonly sectionOffsets: readonly bigint[];
  readonly sectionSizes: readonly bigint[];
  readonly unused: number;
  readonly crc32: number;
}

export interface EifSectionInfo {
  readonly kind: EifSectionKind;
  /** File offset of the section header. */
  readonly offset: number;
  /** Length of the section data. */
  readonly size: number;
}
