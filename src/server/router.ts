/**
 * Routes a decoded request to the engine serving its model. The table is built once, after
 * every engine's `start()` resolved, from the engines' own model lists (the same lists whose
 * digests go into the key config), so a client can address exactly what was attested.
 */
import { CloisterError } from '../errors.js';
import type { Engine, ModelInfo, Operation } from '../inference/types.js';

const OPERATIONS: ReadonlySet<string> = new Set<Operation>([
  'classify', 'embed', 'token-classify', 'generate', 'chat', 'completion', 'embeddings', 'models',
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

  /** The engine for (op, model), or UNKNOWN_OPERATION / UNKNOWN_MODEL. */
  route(op: unknown, model: unknown): Engine {
    if (!isOperation(op)) throw new CloisterError('UNKNOWN_OPERATION');
    const entry = typeof model === 'string' ? this.byModel.get(model) : undefined;
    if (entry === undefined) throw new CloisterError('UNKNOWN_MODEL');
    if (!entry.info.operations.includes(op)) throw new CloisterError('UNKNOWN_OPERATION', 'the model does not offer this operation');
    return entry.engine;
  }
}
