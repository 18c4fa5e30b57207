/**
 * The plaintext records of a collection file (sealed by sealed-log.ts), CBOR maps:
 *   create: { t: "create", v, cap: SHA-256(capability), chunking: {maxChars, overlapChars}, policy, dims }
 *   add:    { t: "add", v, docs: [{ id, meta, text, chunks: [start, end, ...], vec: float32 LE bytes }] }
 *   delete: { t: "delete", v, ids: [id, ...] }
 * `v` is the collection version after the record: +1 per acknowledged change; a rewritten
 * (compacted) file repeats the current version on its create and add records.
 */
import { CloisterError } from '../errors.js';
import { isRecord } from '../core/validate.js';
import { decodeCbor, encodeCbor, toPlain } from '../core/cbor.js';
import type { CborInput } from '../core/cbor.js';
import { isGuardPolicy } from '../guard/policy.js';
import type { GuardPolicy } from '../guard/policy.js';
import type { ChunkingOptions } from './chunking.js';

export type Metadata = Readonly<Record<string, string | number | boolean>>;

export interface StoredDocument {
  readonly id: string;
  readonly meta: Metadata;
  readonly text: string;
  /** [start, end] offsets of each chunk into `text`. */
  readonly chunks: readonly (readonly [number, number])[];
  /** One unit vector per chunk, `dims` float32 each. */
  readonly vectors: Float32Array;
}

export type CollectionRecord =
  | { readonly t: 'create'; readonly v: number; readonly cap: Uint8Array; readonly chunking: ChunkingOptions; readonly policy: GuardPolicy; readonly dims: number }
  | { readonly t: 'add'; readonly v: number; readonly docs: readonly StoredDocument[] }
  | { readonly t: 'delete'; readonly v: number; readonly ids: readonly string[] };

function vecBytes(v: Float32Array): Uint8Array {
  const out = new Uint8Array(v.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < v.length; i++) dv.setFloat32(i * 4, v[i] as number, true);
  return out;
}

function vecOf(b: Uint8Array): Float32Array {
  const out = new Float32Array(b.byteLength / 4);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(i * 4, true);
  return out;
}

export function encodeRecord(r: CollectionRecord): Uint8Array {
  switch (r.t) {
    case 'create':
      return encodeCbor({ t: r.t, v: r.v, cap: r.cap, chunking: { maxChars: r.chunking.maxChars, overlapChars: r.chunking.overlapChars }, policy: r.policy, dims: r.dims });
    case 'add':
      return encodeCbor({
        t: r.t,
        v: r.v,
        docs: r.docs.map((d) => ({ id: d.id, meta: d.meta as Record<string, CborInput>, text: d.text, chunks: d.chunks.flat(), vec: vecBytes(d.vectors) })),
      });
    case 'delete':
      return encodeCbor({ t: r.t, v: r.v, ids: [...r.ids] });
  }
}

function bad(why: string): CloisterError {
  return new CloisterError('STORAGE_CORRUPT', `a collection record is not well formed: ${why}`);
}


/** Authenticated bytes, but still checked field by field (a bug must not become a crash later). */
export function decodeRecord(bytes: Uint8Array, dims?: number): CollectionRecord {
  const r = toPlain(decodeCbor(bytes, { maxBytes: bytes.byteLength, maxDepth: 8, maxItems: 50_000_000, allowFloats: true }));
  if (!isRecord(r) || typeof r['v'] !== 'number' || !Number.isSafeInteger(r['v']) || r['v'] < 0) throw bad('no version');
  const v = r['v'];
  if (r['t'] === 'create') {
    const cap = r['cap'];
    const ch = r['chunking'];
    const policy = r['policy'];
    const d = r['dims'];
    if (!(cap instanceof Uint8Array) || cap.byteLength !== 32 || !isRecord(ch) || typeof ch['maxChars'] !== 'number' || typeof ch['overlapChars'] !== 'number'
      || !isGuardPolicy(policy) || typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1) throw bad('create');
    return { t: 'create', v, cap, chunking: { maxChars: ch['maxChars'], overlapChars: ch['overlapChars'] }, policy, dims: d };
  }
  if (r['t'] === 'add') {
    const docs = r['docs'];
    if (!Array.isArray(docs) || dims === undefined) throw bad('add');
    return {
      t: 'add',
      v,
      docs: docs.map((x): StoredDocument => {
        if (!isRecord(x) || typeof x['id'] !== 'string' || typeof x['text'] !== 'string' || !isRecord(x['meta']) || !Array.isArray(x['chunks']) || !(x['vec'] instanceof Uint8Array)) throw bad('document');
        const flat = x['chunks'];
        const text = x['text'];
        if (flat.length % 2 !== 0 || x['vec'].byteLength !== (flat.length / 2) * dims * 4) throw bad('chunks');
        const chunks: [number, number][] = [];
        for (let i = 0; i < flat.length; i += 2) {
          const s = flat[i];
          const e = flat[i + 1];
          if (typeof s !== 'number' || typeof e !== 'number' || !(s >= 0 && s <= e && e <= text.length)) throw bad('chunk offsets');
          chunks.push([s, e]);
        }
        return { id: x['id'], meta: x['meta'] as Metadata, text, chunks, vectors: vecOf(x['vec']) };
      }),
    };
  }
  if (r['t'] === 'delete') {
    const ids = r['ids'];
    if (!Array.isArray(ids) || !ids.every((i) => typeof i === 'string')) throw bad('delete');
    return { t: 'delete', v, ids: ids as string[] };
  }
  throw bad('unknown type');
}
