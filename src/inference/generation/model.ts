/**
 * Loading one decoder-only model in the Hugging Face / Optimum layout, local files only:
 *
 *   config.json             model_type, layers, KV heads, vocabulary size, eos
 *   generation_config.json  optional: eos_token_id and sampling defaults
 *   tokenizer.json, tokenizer_config.json (its chat_template enables the chat operation)
 *   onnx/model.onnx (fp32), onnx/model_quantized.onnx (q8), onnx/model_q4.onnx (q4)
 *
 * transformers.js (AutoModelForCausalLM, AutoTokenizer) loads the files: it knows each
 * family's inputs (position ids, gemma's 1-based positions, use_cache_branch,
 * num_logits_to_keep). The engine checks the export against config.json before serving:
 * past-key-value inputs for every layer, KV heads and vocabulary size where the graph states
 * them. Every failure names the file.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { CloisterError } from '../../errors.js';
import type { TransformersModule } from '../onnx/transformers-env.js';

export type GenerationDtype = 'fp32' | 'q8' | 'q4';
export const GENERATION_DTYPES: readonly GenerationDtype[] = ['fp32', 'q8', 'q4'];

/** The ONNX file transformers.js reads for each dtype (its DEFAULT_DTYPE_SUFFIX_MAPPING). */
export const ONNX_FILE_OF: Readonly<Record<GenerationDtype, string>> = {
  fp32: 'onnx/model.onnx',
  q8: 'onnx/model_quantized.onnx',
  q4: 'onnx/model_q4.onnx',
};

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(file: string, message: string, model: string): CloisterError {
  return new CloisterError('CONFIG_INVALID', `${file}: ${message}`, { detail: { model, file } });
}

export async function requireFile(dir: string, rel: string, model: string, why = ''): Promise<void> {
  try {
    const st = await stat(join(dir, rel));
    if (!st.isFile()) throw invalid(rel, 'is not a regular file', model);
  } catch (cause) {
    if (cause instanceof CloisterError) throw cause;
    throw new CloisterError('NOT_FOUND', `model '${model}' has no ${rel}${why}`, { cause, detail: { model, file: rel } });
  }
}

export async function readJsonFile(dir: string, rel: string, model: string, optional: boolean): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, rel), 'utf8');
  } catch (cause) {
    if (optional) return undefined;
    throw new CloisterError('NOT_FOUND', `model '${model}' has no ${rel}`, { cause, detail: { model, file: rel } });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid(rel, 'is not valid JSON', model);
  }
  if (!isRecord(value)) throw invalid(rel, 'is not a JSON object', model);
  return value;
}

function intField(obj: Record<string, unknown>, ...names: string[]): number | undefined {
  for (const n of names) {
    const v = obj[n];
    if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return v;
  }
  return undefined;
}

function idList(v: unknown): number[] {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0);
  return [];
}

/** Sampling defaults from generation_config.json (absent fields: undefined). */
export interface GenerationDefaults {
  readonly doSample: boolean;
  readonly temperature: number | undefined;
  readonly topP: number | undefined;
  readonly topK: number | undefined;
}

export interface LoadedGenerator {
  readonly modelType: string;
  readonly vocabSize: number;
  readonly layers: number;
  /** Tokens whose generation ends the answer (finish_reason "stop"). */
  readonly eos: ReadonlySet<number>;
  readonly defaults: GenerationDefaults;
  /** Most positions the model was built for (config.json), if stated. */
  readonly maxPositions: number | undefined;
  /** KV cache bytes per token (all layers, keys and values), from the graph's input shapes. */
  readonly kvBytesPerToken: number;
  readonly hasChatTemplate: boolean;
  /** The tokenizer (transformers.js) and the model's session-driving forward. */
  readonly tokenizer: TokenizerLike;
  readonly model: CausalLmLike;
  readonly mod: TransformersModule;
  readonly sessionInputs: ReadonlySet<string>;
}

export interface TokenizerLike {
  encode(text: string, options: { add_special_tokens: boolean }): number[];
  decode(ids: readonly number[], options: { skip_special_tokens: boolean }): string;
  apply_chat_template(messages: readonly { role: string; content: string }[], options: Record<string, unknown>): unknown;
}

export interface CausalLmLike {
  forward(inputs: Record<string, unknown>): Promise<Record<string, unknown>>;
  dispose(): Promise<unknown>;
  readonly sessions: Record<string, { readonly inputNames: readonly string[]; readonly outputNames: readonly string[]; readonly inputMetadata?: readonly { name: string; shape: readonly (number | string)[]; type?: string }[] }>;
}

const ELEMENT_BYTES: Readonly<Record<string, number>> = { float32: 4, float16: 2, uint8: 1, int8: 1 };

/** Loads and checks one model directory; `name` only labels errors. */
export async function loadGenerator(mod: TransformersModule, dir: string, name: string, dtype: GenerationDtype, sessionOptions: Record<string, unknown>): Promise<LoadedGenerator> {
  const onnxFile = ONNX_FILE_OF[dtype];
  const config = (await readJsonFile(dir, 'config.json', name, false)) as Record<string, unknown>;
  await requireFile(dir, 'tokenizer.json', name);
  const tokConfig = (await readJsonFile(dir, 'tokenizer_config.json', name, false)) as Record<string, unknown>;
  const genConfig = (await readJsonFile(dir, 'generation_config.json', name, true)) ?? {};
  await requireFile(dir, onnxFile, name, ` (the ${dtype} variant; choose another with --generator-dtype)`);

  const modelType = config['model_type'];
  if (typeof modelType !== 'string' || modelType === '') throw invalid('config.json', 'has no model_type', name);
  const arch = config['architectures'];
  if (Array.isArray(arch) && !arch.some((a) => typeof a === 'string' && a.endsWith('ForCausalLM'))) {
    throw invalid('config.json', 'architectures name no *ForCausalLM: not a decoder-only generative model', name);
  }
  const vocabSize = intField(config, 'vocab_size');
  if (vocabSize === undefined) throw invalid('config.json', 'has no vocab_size', name);
  const layers = intField(config, 'num_hidden_layers', 'n_layer', 'num_layers');
  if (layers === undefined) throw invalid('config.json', 'has no num_hidden_layers (or n_layer)', name);
  const kvHeads = intField(config, 'num_key_value_heads', 'num_attention_heads', 'n_head');
  const eos = new Set([...idList(genConfig['eos_token_id']), ...idList(config['eos_token_id'])]);
  if (eos.size === 0) throw invalid('generation_config.json', 'no eos_token_id here or in config.json: generation could not end', name);
  for (const id of eos) if (id >= vocabSize) throw invalid('generation_config.json', `eos_token_id ${id} is outside the vocabulary (config.json vocab_size ${vocabSize})`, name);
  const chatTemplate = tokConfig['chat_template'];
  const hasChatTemplate = (typeof chatTemplate === 'string' && chatTemplate !== '') || Array.isArray(chatTemplate);

  let tokenizer: TokenizerLike;
  let model: CausalLmLike;
  try {
    tokenizer = (await mod.AutoTokenizer.from_pretrained(dir, { local_files_only: true })) as unknown as TokenizerLike;
  } catch (cause) {
    throw new CloisterError('CONFIG_INVALID', `tokenizer.json / tokenizer_config.json could not be loaded (${cause instanceof Error ? cause.name : 'error'})`, {
      detail: { model: name, file: 'tokenizer.json' },
    });
  }
  try {
    model = (await mod.AutoModelForCausalLM.from_pretrained(dir, {
      local_files_only: true,
      device: 'cpu',
      dtype,
      subfolder: 'onnx',
      model_file_name: 'model',
      session_options: sessionOptions,
    })) as unknown as CausalLmLike;
  } catch (cause) {
    // The library's message names the model type or file, never request content.
    const why = cause instanceof Error ? cause.message.slice(0, 200) : 'error';
    throw new CloisterError('CONFIG_INVALID', `${onnxFile} (model_type '${modelType}' in config.json) could not be loaded: ${why}`, {
      detail: { model: name, file: onnxFile },
    });
  }
  try {
    const session = model.sessions['model'];
    if (session === undefined) throw invalid(onnxFile, 'no decoder session', name);
    const inputs = new Set(session.inputNames);
    const outputs = new Set(session.outputNames);
    for (const need of ['input_ids', 'attention_mask']) if (!inputs.has(need)) throw invalid(onnxFile, `has no '${need}' input`, name);
    if (!outputs.has('logits')) throw invalid(onnxFile, "has no 'logits' output", name);
    const pkvLayers = [...inputs].filter((n) => /^past_key_values\.\d+\.key$/.test(n)).length;
    if (pkvLayers === 0) throw invalid(onnxFile, 'has no past_key_values inputs: export it with the KV cache (Optimum "text-generation-with-past")', name);
    if (pkvLayers !== layers) {
      throw invalid('config.json', `num_hidden_layers is ${layers} but ${onnxFile} has past key values for ${pkvLayers} layers`, name);
    }
    let kvBytesPerToken = 0;
    for (let i = 0; i < layers; i++) {
      for (const kind of ['key', 'value']) {
        const inName = `past_key_values.${i}.${kind}`;
        if (!inputs.has(inName)) throw invalid(onnxFile, `has no '${inName}' input`, name);
        if (!outputs.has(`present.${i}.${kind}`)) throw invalid(onnxFile, `has no 'present.${i}.${kind}' output`, name);
        const meta = session.inputMetadata?.find((m) => m.name === inName);
        const shape = meta?.shape ?? [];
        const heads = shape[1];
        const headDim = shape[3];
        if (kvHeads !== undefined && typeof heads === 'number' && heads !== kvHeads && kvHeads % heads !== 0) {
          throw invalid('config.json', `states ${kvHeads} key/value heads but ${onnxFile} has ${heads}`, name);
        }
        const elem = ELEMENT_BYTES[meta?.type ?? 'float32'] ?? 4;
        if (typeof heads === 'number' && typeof headDim === 'number') kvBytesPerToken += heads * headDim * elem;
      }
    }
    const vocabTokens = tokenizerVocabSize(tokenizer);
    if (vocabTokens !== undefined && vocabTokens > vocabSize) {
      throw invalid('tokenizer.json', `has ${vocabTokens} tokens but config.json vocab_size is ${vocabSize}`, name);
    }
    const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
    return {
      modelType,
      vocabSize,
      layers,
      eos,
      defaults: {
        doSample: genConfig['do_sample'] === true,
        temperature: num(genConfig['temperature']),
        topP: num(genConfig['top_p']),
        topK: num(genConfig['top_k']),
      },
      maxPositions: intField(config, 'max_position_embeddings', 'n_positions'),
      kvBytesPerToken,
      hasChatTemplate,
      tokenizer,
      model,
      mod,
      sessionInputs: inputs,
    };
  } catch (err) {
    await model.dispose().catch(() => undefined);
    throw err;
  }
}

function tokenizerVocabSize(tokenizer: TokenizerLike): number | undefined {
  const t = tokenizer as unknown as Record<string, unknown>;
  const getVocab = t['get_vocab'];
  if (typeof getVocab !== 'function') return undefined;
  const vocab: unknown = getVocab.call(tokenizer);
  if (vocab instanceof Map) return vocab.size;
  if (isRecord(vocab)) return Object.keys(vocab).length;
  return undefined;
}
