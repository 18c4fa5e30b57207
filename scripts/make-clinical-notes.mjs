#!/usr/bin/env node
// Regenerates data/clinical-notes.jsonl (the demo model's training set) from the phrase banks
// in tools/demo-model/dataset.ts. Deterministic.
import { writeFile } from 'node:fs/promises';

import { importTool } from './tools-build.mjs';

const { encodeClinicalNotes, generateClinicalNotes } = await importTool('demo-model/dataset');

const target = new URL('../data/clinical-notes.jsonl', import.meta.url);
const notes = generateClinicalNotes();
await writeFile(target, encodeClinicalNotes(notes));
console.log(`wrote ${notes.length} notes to ${target.pathname}`);
