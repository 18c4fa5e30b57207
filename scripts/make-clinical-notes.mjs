#!/usr/bin/env node
// Regenerates data/clinical-notes.jsonl (the demo model's training set) from the phrase banks
// in src/inference/demo-model/dataset.ts. Deterministic; run `npm run build` first.
import { writeFile } from 'node:fs/promises';

import { encodeClinicalNotes, generateClinicalNotes } from '../dist/inference/demo-model/dataset.js';

const target = new URL('../data/clinical-notes.jsonl', import.meta.url);
const notes = generateClinicalNotes();
await writeFile(target, encodeClinicalNotes(notes));
console.log(`wrote ${notes.length} notes to ${target.pathname}`);
