/**
 * CRC-32/ISO-HDLC (the IEEE 802.3 / zlib CRC), as the EIF header's eif_crc32 uses
 * (aws-nitro-enclaves-image-format: `Crc::<u32>::new(&CRC_32_ISO_HDLC)`). Incremental.
 */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export class Crc32 {
  private state = 0xffffffff;

  update(bytes: Uint8Array): this {
    let c = this.state;
    for (let i = 0; i < bytes.length; i++) {
      c = (TABLE[(c ^ (bytes[i] ?? 0)) & 0xff] ?? 0) ^ (c >>> 8);
    }
    this.state = c;
    return this;
  }

  digest(): number {
    return (this.state ^ 0xffffffff) >>> 0;
  }
}
