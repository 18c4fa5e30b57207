/**
 * The demo training set: short synthetic clinical notes labelled by the department that should
 * handle them. Every note is generated from the hand-written phrase banks below with a seeded
 * RNG (no real patient data anywhere). The generated set is shipped as
 * data/clinical-notes.jsonl; `generateClinicalNotes()` reproduces that file byte for byte
 * (a test checks it), and the model builder trains on the file.
 *
 * To keep the task honest, notes mix department-specific content with generic history,
 * vitals and follow-up sentences that every department shares, and some notes carry a
 * complaint that belongs to another department ("distractor"), so held-out accuracy is high
 * but not trivially perfect.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

import { CloisterError } from '../../src/errors.js';
import { SeededRng } from './rng.js';

export const DEPARTMENTS = [
  'cardiology',
  'dermatology',
  'gastroenterology',
  'neurology',
  'orthopedics',
  'pulmonology',
] as const;

type Department = (typeof DEPARTMENTS)[number];

export interface ClinicalNote {
  readonly id: string;
  readonly department: Department;
  readonly split: 'train' | 'test';
  readonly text: string;
}

interface Bank {
  readonly complaints: readonly string[];
  readonly findings: readonly string[];
  readonly tests: readonly string[];
  readonly plans: readonly string[];
}

const BANKS: Readonly<Record<Department, Bank>> = {
  cardiology: {
    complaints: [
      'substernal chest pressure radiating to the left arm on exertion',
      'palpitations and an irregular heartbeat for three days',
      'shortness of breath when lying flat and swollen ankles',
      'an episode of fainting while climbing stairs',
      'chest tightness relieved by rest',
      'a racing heart and lightheadedness',
      'worsening exercise tolerance and leg edema',
      'exertional angina that now occurs at rest',
    ],
    findings: [
      'an irregularly irregular pulse',
      'a harsh systolic murmur at the right upper sternal border',
      'jugular venous distension and bibasilar crackles',
      'pitting edema of both lower legs',
      'an S3 gallop on auscultation',
      'blood pressure of 172/98 despite medication',
    ],
    tests: [
      'ECG shows atrial fibrillation with rapid ventricular response',
      'troponin is elevated on serial measurements',
      'echocardiogram shows reduced ejection fraction of 30 percent',
      'ECG shows ST elevation in the inferior leads',
      'BNP is markedly elevated',
      'Holter monitor recorded runs of ventricular tachycardia',
    ],
    plans: [
      'start anticoagulation and rate control with a beta blocker',
      'refer for cardiac catheterization',
      'begin a diuretic and an ACE inhibitor',
      'schedule a stress test and lipid panel',
      'titrate antihypertensive therapy',
      'consider pacemaker evaluation',
    ],
  },
  dermatology: {
    complaints: [
      'an itchy scaly rash on the elbows and knees',
      'a changing pigmented mole on the back',
      'painful blistering lesions along one side of the torso',
      'red pustules and comedones on the face',
      'a rapidly growing pearly nodule on the nose',
      'dry cracked skin and eczema flares on the hands',
      'hives that appear after eating shellfish',
      'hair loss in round patches',
    ],
    findings: [
      'well demarcated erythematous plaques with silvery scale',
      'an asymmetric lesion with irregular borders and color variation',
      'grouped vesicles on an erythematous base in a dermatomal pattern',
      'inflammatory papules and nodular acne with scarring',
      'a pearly papule with telangiectasia',
      'lichenified patches in the flexural creases',
    ],
    tests: [
      'dermoscopy shows an atypical pigment network',
      'shave biopsy confirms basal cell carcinoma',
      'KOH preparation of the scale is positive for fungal hyphae',
      'punch biopsy shows psoriasiform hyperplasia',
      'patch testing is positive for nickel',
      'Tzanck smear shows multinucleated giant cells',
    ],
    plans: [
      'start a topical corticosteroid and emollients',
      'schedule excision with clear margins',
      'begin oral isotretinoin with monthly labs',
      'start a topical antifungal cream',
      'refer for Mohs surgery',
      'prescribe a sunscreen regimen and skin checks every six months',
    ],
  },
  gastroenterology: {
    complaints: [
      'burning epigastric pain after meals',
      'black tarry stools and fatigue',
      'chronic diarrhea with cramping abdominal pain',
      'difficulty swallowing solid food',
      'heartburn and acid regurgitation at night',
      'right upper quadrant pain after fatty meals',
      'bloating, constipation and rectal bleeding',
      'yellowing of the eyes and dark urine',
    ],
    findings: [
      'epigastric tenderness without guarding',
      'a positive Murphy sign',
      'scleral icterus and a palpable liver edge',
      'hyperactive bowel sounds and diffuse abdominal tenderness',
      'heme positive stool on rectal exam',
      'abdominal distension with shifting dullness',
    ],
    tests: [
      'upper endoscopy shows a gastric ulcer',
      'colonoscopy shows inflamed mucosa consistent with colitis',
      'liver enzymes and bilirubin are elevated',
      'abdominal ultrasound shows gallstones',
      'lipase is three times the upper limit of normal',
      'stool studies are positive for Helicobacter pylori antigen',
    ],
    plans: [
      'start a proton pump inhibitor and eradication therapy',
      'schedule colonoscopy with biopsies',
      'refer for cholecystectomy',
      'begin mesalamine and a low residue diet',
      'arrange an esophageal dilation',
      'check hepatitis serologies and avoid alcohol',
    ],
  },
  neurology: {
    complaints: [
      'sudden weakness of the right arm and slurred speech',
      'recurrent throbbing headaches with visual aura',
      'a witnessed seizure with tongue biting',
      'numbness and tingling in both feet',
      'a resting tremor of the left hand and slow movements',
      'episodes of vertigo with double vision',
      'progressive memory loss and confusion',
      'facial droop that started this morning',
    ],
    findings: [
      'right sided hemiparesis and expressive aphasia',
      'a pill rolling tremor with cogwheel rigidity',
      'decreased vibration sense and absent ankle reflexes',
      'nystagmus and an ataxic gait',
      'a positive Babinski sign on the left',
      'papilledema on fundoscopic exam',
    ],
    tests: [
      'MRI of the brain shows an acute infarct in the left MCA territory',
      'EEG shows focal epileptiform discharges',
      'nerve conduction studies confirm a sensory polyneuropathy',
      'MRI shows periventricular white matter lesions',
      'CT of the head shows no hemorrhage',
      'lumbar puncture shows oligoclonal bands',
    ],
    plans: [
      'start levetiracetam and seizure precautions',
      'begin a triptan and migraine prophylaxis',
      'admit to the stroke unit and give thrombolysis',
      'start carbidopa levodopa',
      'refer for cognitive testing',
      'start gabapentin for neuropathic pain',
    ],
  },
  orthopedics: {
    complaints: [
      'knee pain and swelling after a twisting injury playing soccer',
      'low back pain radiating down the left leg',
      'inability to bear weight after a fall on the hip',
      'shoulder pain when reaching overhead',
      'wrist pain and deformity after falling on an outstretched hand',
      'a locking knee and joint line pain',
      'ankle swelling after rolling it on a curb',
      'stiffness and grinding in both knees',
    ],
    findings: [
      'a positive Lachman test and knee effusion',
      'a shortened and externally rotated leg',
      'tenderness over the anatomical snuffbox',
      'a positive straight leg raise',
      'painful arc and weakness of the rotator cuff',
      'joint line tenderness and a positive McMurray test',
    ],
    tests: [
      'X-ray shows a displaced distal radius fracture',
      'MRI of the knee shows a torn anterior cruciate ligament',
      'X-ray shows a femoral neck fracture',
      'MRI of the lumbar spine shows a disc herniation at L5 S1',
      'radiographs show joint space narrowing and osteophytes',
      'MRI shows a full thickness rotator cuff tear',
    ],
    plans: [
      'apply a cast and follow up in the fracture clinic',
      'schedule arthroscopic reconstruction',
      'refer for hip arthroplasty',
      'start physical therapy and anti inflammatory medication',
      'give a corticosteroid injection into the joint',
      'immobilize with a splint and crutches',
    ],
  },
  pulmonology: {
    complaints: [
      'a chronic productive cough and wheezing',
      'shortness of breath on exertion and a smoking history of 40 pack years',
      'fever, cough and pleuritic pain on the right side',
      'nocturnal cough and wheeze triggered by cold air',
      'loud snoring and daytime sleepiness',
      'coughing up blood and weight loss',
      'sudden breathlessness after a long flight',
      'progressive dyspnea and a dry cough',
    ],
    findings: [
      'diffuse expiratory wheezes and a prolonged expiratory phase',
      'dullness to percussion and bronchial breath sounds at the right base',
      'oxygen saturation of 88 percent on room air',
      'fine velcro crackles at both lung bases',
      'digital clubbing',
      'decreased breath sounds over the left lung',
    ],
    tests: [
      'spirometry shows obstruction with an FEV1 of 55 percent',
      'chest X-ray shows a right lower lobe consolidation',
      'CT of the chest shows a spiculated lung nodule',
      'CT angiogram shows a pulmonary embolism',
      'sleep study shows severe obstructive sleep apnea',
      'CT shows interstitial fibrosis with honeycombing',
    ],
    plans: [
      'start an inhaled bronchodilator and inhaled corticosteroid',
      'begin antibiotics for community acquired pneumonia',
      'start CPAP therapy at night',
      'refer for bronchoscopy and biopsy',
      'start anticoagulation for the embolism',
      'enroll in pulmonary rehabilitation and smoking cessation',
    ],
  },
};

const AGES_MIN = 19;
const AGES_SPAN = 70;
const PATIENTS = ['man', 'woman', 'male', 'female', 'patient'] as const;
const OPENERS = [
  (age: number, p: string) => `${age} year old ${p} presents with`,
  (age: number, p: string) => `A ${age}-year-old ${p} complains of`,
  (age: number, p: string) => `${age} yo ${p} referred for`,
  (age: number, p: string) => `Pt is a ${age} y/o ${p} seen today for`,
] as const;
const GENERIC = [
  'History of hypertension and type 2 diabetes.',
  'No known drug allergies.',
  'Takes metformin and lisinopril.',
  'Former smoker, drinks alcohol socially.',
  'Vitals: temperature 37.1, heart rate 88, blood pressure 138/84.',
  'Reports fatigue and poor sleep over the last month.',
  'Lives alone and works as a teacher.',
  'Family history of cancer.',
  'Symptoms have been getting worse over two weeks.',
  'Pain rated 6 out of 10.',
  'Denies recent travel.',
  'Appetite is reduced.',
] as const;
const FOLLOW_UP = [
  'Follow up in two weeks.',
  'Return precautions discussed.',
  'Patient agrees with the plan.',
  'Will review results at the next visit.',
  'Discussed risks and benefits.',
] as const;

function capitalize(s: string): string {
  return s.length === 0 ? s : s.charAt(0).toUpperCase() + s.slice(1);
}

/** Notes per department in the shipped set, and the held-out share (every 5th note). */
const NOTES_PER_DEPARTMENT = 110;
const DATASET_SEED = 0x5eed_c105;

function makeNote(rng: SeededRng, dept: Department): string {
  const bank = BANKS[dept];
  const parts: string[] = [];
  const age = AGES_MIN + rng.int(AGES_SPAN);
  const opener = rng.pick(OPENERS);
  parts.push(`${opener(age, rng.pick(PATIENTS))} ${rng.pick(bank.complaints)}.`);
  if (rng.chance(0.6)) parts.push(rng.pick(GENERIC));
  if (rng.chance(0.25)) {
    // A complaint from another department: real notes mention more than one problem.
    const others = DEPARTMENTS.filter((d) => d !== dept);
    parts.push(`Also mentions ${rng.pick(BANKS[rng.pick(others)].complaints)}.`);
  }
  if (rng.chance(0.6)) parts.push(`Exam notable for ${rng.pick(bank.findings)}.`);
  if (rng.chance(0.5)) parts.push(`${capitalize(rng.pick(bank.tests))}.`);
  if (rng.chance(0.4)) parts.push(rng.pick(GENERIC));
  if (rng.chance(0.55)) parts.push(`Plan: ${rng.pick(bank.plans)}.`);
  if (rng.chance(0.5)) parts.push(rng.pick(FOLLOW_UP));
  return parts.join(' ');
}

/** The shipped data set, regenerated: deterministic for a given seed. */
export function generateClinicalNotes(seed: number = DATASET_SEED): ClinicalNote[] {
  const rng = new SeededRng(seed);
  const notes: ClinicalNote[] = [];
  let n = 0;
  for (let i = 0; i < NOTES_PER_DEPARTMENT; i++) {
    for (const dept of DEPARTMENTS) {
      n++;
      notes.push({
        id: `note-${String(n).padStart(4, '0')}`,
        department: dept,
        split: i % 5 === 4 ? 'test' : 'train',
        text: makeNote(rng, dept),
      });
    }
  }
  return notes;
}

/** JSON Lines encoding of the data set, one note per line, fixed key order. */
export function encodeClinicalNotes(notes: readonly ClinicalNote[]): string {
  return notes
    .map((n) => JSON.stringify({ id: n.id, department: n.department, split: n.split, text: n.text }))
    .join('\n')
    .concat('\n');
}

const MAX_DATASET_BYTES = 16 * 1024 * 1024;

/** Parse and validate a data set in the shipped JSON Lines format; fails on any bad line. */
export function parseClinicalNotes(jsonl: string): ClinicalNote[] {
  if (jsonl.length > MAX_DATASET_BYTES) throw new CloisterError('LIMIT_EXCEEDED', 'data set file is too large');
  const notes: ClinicalNote[] = [];
  const ids = new Set<string>();
  const lines = jsonl.split('\n');
  if (lines.at(-1) === '') lines.pop();
  lines.forEach((line, i) => {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (cause) {
      throw new CloisterError('MALFORMED', 'data set line is not JSON', { cause, detail: { line: i + 1 } });
    }
    if (typeof value !== 'object' || value === null) {
      throw new CloisterError('MALFORMED', 'data set line is not an object', { detail: { line: i + 1 } });
    }
    const rec = value as Record<string, unknown>;
    const { id, department, split, text } = rec;
    const ok =
      typeof id === 'string' &&
      typeof text === 'string' &&
      text.length > 0 &&
      (split === 'train' || split === 'test') &&
      typeof department === 'string' &&
      (DEPARTMENTS as readonly string[]).includes(department) &&
      Object.keys(rec).length === 4 &&
      !ids.has(id);
    if (!ok) throw new CloisterError('MALFORMED', 'data set line has invalid fields', { detail: { line: i + 1 } });
    ids.add(id);
    notes.push({ id, department: department as Department, split, text });
  });
  if (notes.length === 0) throw new CloisterError('MALFORMED', 'data set is empty');
  return notes;
}

/**
 * Default location of the data set: <repo>/data/clinical-notes.jsonl, from the sources
 * (tools/demo-model/) or from their build (build/tools/tools/demo-model/, tsconfig.tools.json).
 */
export const DEFAULT_DATASET_URL =
  [new URL('../../data/clinical-notes.jsonl', import.meta.url), new URL('../../../../data/clinical-notes.jsonl', import.meta.url)].find((u) =>
    existsSync(u),
  ) ?? new URL('../../data/clinical-notes.jsonl', import.meta.url);

export async function loadClinicalNotes(path: string | URL = DEFAULT_DATASET_URL): Promise<ClinicalNote[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new CloisterError('NOT_FOUND', 'data set file not found', { cause });
  }
  return parseClinicalNotes(text);
}
