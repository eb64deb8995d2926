/** Paths and run arguments of the real models (the list lives in models/real.ts). */
import { REAL_MODELS, type RealName } from '../../models/real.js';

export { realModelArgs, REAL_MODELS, ROOT, type RealName } from '../../models/real.js';

export const REAL = Object.fromEntries(Object.entries(REAL_MODELS).map(([k, v]) => [k, v.path])) as Record<RealName, string>;
export const REAL_SHAPES = Object.fromEntries(Object.entries(REAL_MODELS).map(([k, v]) => [k, v.shapes])) as Record<RealName, string[]>;
