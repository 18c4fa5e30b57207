/** Test-only: a token-classification model directory built from the demo classifier (not a test file itself; shared by the onnx and gateway tests). */
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { encodeOnnxModel, float32Raw, ONNX_FLOAT, ONNX_INT64 } from '../../tools/demo-model/onnx-proto.js';

/** Every token "O" except "ecg" ("TEST"); subwords "SUBWORD". Scores from a lookup table (Gather). */
export async function makeTagger(classifierDir: string, dir: string): Promise<void> {
  await cp(classifierDir, dir, { recursive: true });
  const tok = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
  const vocab = Object.entries(tok.model.vocab);
  const size = Math.max(...vocab.map(([, id]) => id)) + 1;
  const table = new Float32Array(size * 3);
  for (const [t, id] of vocab) {
    table[id * 3] = t === 'ecg' ? 0.5 : 4 + (id % 7) / 10;
    table[id * 3 + 1] = t === 'ecg' ? 3 + (id % 5) / 10 : 0;
    table[id * 3 + 2] = t.startsWith('##') ? 6 : 1;
  }
  const onnx = encodeOnnxModel(
    {
      name: 'tagger',
      docString: '',
      metadata: {},
      nodes: [{ name: 'g', opType: 'Gather', inputs: ['table', 'input_ids'], outputs: ['logits'] }],
      initializers: [{ name: 'table', dims: [size, 3], dataType: ONNX_FLOAT, raw: float32Raw(table) }],
      inputs: [{ name: 'input_ids', elemType: ONNX_INT64, shape: ['b', 's'] }],
      outputs: [{ name: 'logits', elemType: ONNX_FLOAT, shape: ['b', 's', 3] }],
    },
    'test',
  );
  await writeFile(join(dir, 'onnx', 'model.onnx'), onnx);
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  config['architectures'] = ['BertForTokenClassification'];
  config['id2label'] = { 0: 'O', 1: 'TEST', 2: 'SUBWORD' };
  config['label2id'] = { O: 0, TEST: 1, SUBWORD: 2 };
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
}
