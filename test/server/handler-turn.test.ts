/**
 * The handler's per-request fast paths keep their guarantees: a one-shot answer leaves no
 * pending immediate behind (the end-of-turn wait is dropped once the engine is done), and a
 * transport whose writes return nothing (no backpressure) still gets a complete, verifiable
 * sealed response, while a cancel still stops the writing.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { handleSealedRequest } from '../../src/server/handler.js';
import type { HandlerDeps } from '../../src/server/handler.js';
import { KeyManager } from '../../src/server/keys.js';
import { ReplayWindow } from '../../src/server/replay.js';
import { EngineRouter } from '../../src/server/router.js';
import { ServerStats } from '../../src/server/stats.js';
import { silentLogger } from '../../src/server/log.js';
import type { Engine, ModelInfo } from '../../src/inference/types.js';
import { sealChunkedRequest } from '../../src/protocol/chunked.js';
import { decodeKeyConfig, sealTargetFromKeyConfig } from '../../src/protocol/key-config.js';
import { decodeResponseChunk, encodeSealedRequest, ReceiptHasher, verifyReceipt } from '../../src/protocol/messages.js';
import { fakeResponseOut } from '../helpers/response-out.js';

const MODEL: ModelInfo = { name: 'one-shot', task: 'text-classification', operations: ['classify'], digest: new Uint8Array(32).fill(3) };
const RESULT = [{ label: 'a', score: 0.75 }];

/** Answers every request with exactly one result, at once (as a non-streaming engine does). */
class OneShotEngine implements Engine {
  readonly kind = 'one-shot';
  runs = 0;
  models(): readonly ModelInfo[] {
    return [MODEL];
  }
  start(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  async *run(): AsyncIterable<unknown> {
    this.runs++;
    await Promise.resolve();
    yield RESULT;
  }
}

function setup(): { deps: HandlerDeps; keys: KeyManager; engine: OneShotEngine } {
  const engine = new OneShotEngine();
  const keys = new KeyManager({ platform: 'simulated', models: engine.models(), configDigest: new Uint8Array(32).fill(7) });
  const deps: HandlerDeps = {
    keys,
    replay: new ReplayWindow(),
    router: new EngineRouter([engine]),
    logger: silentLogger,
    stats: new ServerStats(),
    requestTimeoutMs: 60_000,
    maxRequestBytes: 1024 * 1024,
  };
  return { deps, keys, engine };
}

function request(keys: KeyManager): ReturnType<typeof sealChunkedRequest> & { plaintext: Uint8Array } {
  const plaintext = encodeSealedRequest({ v: 1, op: 'classify', model: MODEL.name, input: 'text', stream: false, ts: Date.now(), id: new Uint8Array(randomBytes(16)) });
  return { ...sealChunkedRequest(sealTargetFromKeyConfig(decodeKeyConfig(keys.current().keyConfig)), plaintext), plaintext };
}

/**
 * Watches the immediates scheduled through setImmediate (as the handler schedules its
 * end-of-turn wait) and counts those still pending. Not the process-wide count
 * (getActiveResourcesInfo): it also counts immediates scheduled outside setImmediate, by native
 * code, and moved under load with the native crypto addon built while the handler's own was
 * cleared.
 */
function watchImmediates(): { seen(): number; pending(): number; restore(): void } {
  const original = globalThis.setImmediate;
  const made: NodeJS.Immediate[] = [];
  const wrapped = ((cb: (...args: unknown[]) => void, ...args: unknown[]) => {
    const i = original(cb, ...args);
    made.push(i);
    return i;
  }) as typeof setImmediate;
  globalThis.setImmediate = Object.assign(wrapped, { __promisify__: original.__promisify__ });
  return {
    seen: () => made.length,
    // Run or cleared: no longer holds the event loop (hasRef() is false for both).
    pending: () => made.filter((i) => i.hasRef()).length,
    restore: () => {
      globalThis.setImmediate = original;
    },
  };
}

describe('handler: one-shot answers and writes without backpressure', () => {
  it('a one-shot answer leaves no pending immediate behind', async () => {
    const { deps, keys } = setup();
    const immediates = watchImmediates();
    try {
      for (let i = 0; i < 5; i++) {
        const out = fakeResponseOut({ mode: 'eager' });
        await handleSealedRequest(deps, request(keys).bytes, out, { conn: 1, signal: new AbortController().signal });
        expect(out.ended).toBe(true);
        // Checked synchronously after the handler resolved: nothing scheduled for the next check phase.
        expect(immediates.pending()).toBe(0);
      }
      // The watch sees the handler's end-of-turn waits (one per request): the check above is not vacuous.
      expect(immediates.seen()).toBeGreaterThanOrEqual(5);
    } finally {
      immediates.restore();
    }
    expect(deps.stats.requestsCompleted).toBe(5);
  });

  it('writes that return nothing still carry the whole sealed response and a valid receipt', async () => {
    const { deps, keys } = setup();
    const sealed = request(keys);
    const out = fakeResponseOut({ mode: 'eager' });
    await handleSealedRequest(deps, sealed.bytes, out, { conn: 1, signal: new AbortController().signal });
    expect(out.failed).toEqual([]);
    expect(out.ended).toBe(true);
    const chunks = [...out.bytes.flatMap((b) => sealed.response.push(b)), ...sealed.response.finish()];
    const decoded = chunks.map((c) => decodeResponseChunk(c.plaintext));
    expect(decoded[0]).toEqual({ t: 'data', data: RESULT });
    const last = decoded[decoded.length - 1];
    if (last?.t !== 'end') throw new Error('no end chunk');
    // The receipt covers the request plaintext and every chunk before the final one.
    const hasher = new ReceiptHasher(sealed.plaintext);
    for (const c of chunks.slice(0, -1)) hasher.update(c.plaintext);
    expect(verifyReceipt(keys.current().receiptPublicKey, hasher.message(), last.receipt)).toBe(true);
  });

  it('a cancel during the response stops the writing even though no write ever waits', async () => {
    const { deps, keys } = setup();
    const abort = new AbortController();
    // Cancel as soon as the first bytes (the response nonce) are taken.
    const out = fakeResponseOut({ mode: 'eager', onWrite: () => abort.abort() });
    await handleSealedRequest(deps, request(keys).bytes, out, { conn: 1, signal: abort.signal });
    expect(out.ended).toBe(false);
    expect(out.bytes.length).toBe(1);
    expect(deps.stats.requestsCancelled).toBe(1);
    expect(deps.stats.requestsCompleted).toBe(0);
  });
});
