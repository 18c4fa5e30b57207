#!/usr/bin/env node
// Trains and writes the bundled demo models (no network): models/demo/classifier,
// models/demo/embedder, models/demo/lm and models/demo/phi-tagger by default, or the directory given as the first argument.
// The builders are build-time tools (tools/demo-model/, compiled here into build/tools/, never
// into dist/): they need the dev dependencies (`npm ci`).
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { importTool } from './tools-build.mjs';

const { buildDemoModels } = await importTool('demo-model/build');

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const outDir = resolve(process.argv[2] ?? resolve(repoRoot, 'models', 'demo'));
const r = await buildDemoModels({ outDir });
console.log(`classifier: ${r.classifierDir}`);
console.log(`embedder:   ${r.embedderDir}`);
console.log(`demo-lm:    ${r.lmDir}`);
console.log(`phi-tagger: ${r.phiTaggerDir}`);
console.log(`labels: ${r.labels.join(', ')}; vocab ${r.vocabSize}`);
console.log(`train accuracy ${r.trainAccuracy.toFixed(4)} on ${r.trainExamples} notes`);
console.log(`held-out accuracy ${r.heldOutAccuracy.toFixed(4)} on ${r.heldOutExamples} notes`);
console.log(`built in ${(r.buildMs / 1000).toFixed(2)} s`);
