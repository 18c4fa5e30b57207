/** The simulated attestation platform (development and tests; no hardware behind it). */
export { createSimulatedAttester, simulatedPcrs } from './attester.js';
export type { SimulatedAttester, SimulatedAttesterOptions, SimulatedMeasurementInputs } from './attester.js';
