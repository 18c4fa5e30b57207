/** The bundled demo models: trained locally from data/clinical-notes.jsonl, no network. */
export { buildDemoModels, trainDemoClassifier, DEMO_MODEL_VERSION } from './build.js';
export type { BuildDemoModelsOptions, DemoModelsResult, DemoTraining } from './build.js';
export { DEPARTMENTS, generateClinicalNotes, loadClinicalNotes, parseClinicalNotes, encodeClinicalNotes } from './dataset.js';
export type { ClinicalNote, Department } from './dataset.js';
