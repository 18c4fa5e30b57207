#!/usr/bin/env node
// `npm start`: run the server on the SIMULATED platform with the bundled demo models
// (classifier, embedder, demo-lm, the generative one: docs/GENERATION.md, and phi-tagger,
// the PHI token-classification model the output guard runs next to its rules: docs/GUARD.md).
// Builds the demo models first when they are missing (scripts/make-demo-model.mjs, which
// uses the compiled library: `npm install` runs `npm run build` through `prepare`).
// Extra arguments are passed to `cloister serve` (e.g. `npm start -- --listen 0.0.0.0:8443`).
// Signals: package.json runs this script with `exec`, so npm's SIGTERM/SIGINT reach this
// process (not a shell that would die and leave the server running); it forwards them to
// the server, which stops accepting, drains the requests in flight (--drain-timeout-s) and
// exits; this script then exits with the server's status.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const cli = resolve(repoRoot, 'dist', 'cli', 'main.js');
const demo = resolve(repoRoot, 'models', 'demo');
const classifier = resolve(demo, 'classifier');
const embedder = resolve(demo, 'embedder');
const lm = resolve(demo, 'lm');
const phiTagger = resolve(demo, 'phi-tagger');

let stopping = false;

function run(args) {
  return new Promise((done) => {
    const child = spawn(process.execPath, args, { stdio: 'inherit', cwd: repoRoot });
    const forward = (sig) => {
      stopping = true;
      child.kill(sig);
    };
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      done(code ?? (signal === null ? 1 : 0));
    });
  });
}

if (!existsSync(cli)) {
  console.error('dist/ is missing: run `npm run build` first (npm install does it through `prepare`).');
  process.exit(1);
}
if (![classifier, embedder, lm, phiTagger].every((dir) => existsSync(resolve(dir, 'onnx', 'model.onnx')))) {
  console.log('building the demo models (one-off, no network)...');
  const code = await run([resolve(repoRoot, 'scripts', 'make-demo-model.mjs'), demo]);
  if (code !== 0 || stopping) process.exit(code);
}
const extra = process.argv.slice(2);
const listen = extra.includes('--listen') || extra.includes('--socket') ? [] : ['--listen', '127.0.0.1:8443'];
const platform = extra.includes('--platform') ? [] : ['--platform', 'simulated'];
process.exitCode = await run([cli, 'serve', '--model', `classifier=${classifier}`, '--embedder', `embedder=${embedder}`, '--generator', `demo-lm=${lm}`, '--model', `phi-tagger=${phiTagger}`, '--guard-tagger', 'phi-tagger', ...listen, ...platform, ...extra]);
