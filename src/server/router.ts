/**
 * Routes a decoded request to the engine serving its model. The table is built once, after
 * every engine's `start()` resolved, from the engines' own model lists (the same lists whose
 * digests go into the key config), so a client can address exactly what was attested.
 */
import { CloisterError } from '../errors.js';
import type { Engine, ModelInfo, Operation } from '../inference/types.js';

const OPERATIONS: ReadonlySet<string> = new Set<Operation>([
  'classify', 'embed', 'token-classify', 'generate', 'chat', 'completion', 'embeddings', 'models', 'collection', 'rag',
]);

function isOperation(op: unknown): op is Operation {
  return typeof op === 'string' && OPERATIONS.has(op);
}

export class EngineRouter {
  private readonly byModel = new Map<string, { engine: Engine; info: ModelInfo }>();

  constructor(engines: readonly Engine[]) {
    for (const engine of engines) {
      for (const info of engine.models()) {
        if (this.byModel.has(info.name)) {
          throw new CloisterError('CONFIG_INVALID', 'two engines serve a model of the same name', { detail: { model: info.name } });
        }
        this.byModel.set(info.name, { engine, info });
      }
    }
  }

  /** Every served model, in a stable order (the key config lists them in this order). */
  models(): readonly ModelInfo[] {
    return [...this.byModel.values()].map((e) => e.info).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** What the server says of a served model (the key config's entry), or UNKNOWN_MODEL as route() gives it. */
  model(name: string): ModelInfo {
    const info = this.byModel.get(name)?.info;
    if (info === undefined) throw this.unknownModel();
    return info;
  }

  private unknownModel(): CloisterError {
    return offered('UNKNOWN_MODEL', `the server serves no such model; models: ${this.models().map((m) => `${m.name} (${m.task})`).join(', ') || 'none'}`);
  }

  /**
   * The engine for (op, model), or UNKNOWN_OPERATION / UNKNOWN_MODEL. Their messages list
   * what the server offers (model names, tasks and operations are in the attested key config,
   * not secret) and never echo the requested name (it came from inside the sealed request).
   */
  route(op: unknown, model: unknown): Engine {
    if (!isOperation(op)) {
      throw offered('UNKNOWN_OPERATION', `unknown operation; operations: ${[...OPERATIONS].join(', ')}`);
    }
    // `rag` names the generative model that answers; the engine that offers `rag` (the
    // collections engine) retrieves and then calls that model itself.
    if (op === 'rag') {
      const rag = [...this.byModel.values()].find((e) => e.info.operations.includes('rag'));
      if (rag !== undefined) return rag.engine;
    }
    const entry = typeof model === 'string' ? this.byModel.get(model) : undefined;
    if (entry === undefined) throw this.unknownModel();
    if (!entry.info.operations.includes(op)) {
      const { name, task, operations } = entry.info;
      const generative = op === 'chat' || op === 'completion' || op === 'generate';
      const hint = generative ? `; ${op} needs a generative model or an --upstream engine` : '';
      const others = this.models().filter((m) => m.operations.includes(op)).map((m) => m.name);
      const alt = others.length > 0 ? `; models offering ${op}: ${others.join(', ')}` : '';
      throw offered('UNKNOWN_OPERATION', `model '${name}' is ${task} and offers ${operations.join(', ')}${hint}${alt}`);
    }
    return entry.engine;
  }
}

/** A routing error whose message lists only what the server offers (content-free: `public`). */
function offered(code: 'UNKNOWN_MODEL' | 'UNKNOWN_OPERATION', message: string): CloisterError {
  return new CloisterError(code, message, { detail: { public: true } });
}
