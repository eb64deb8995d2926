/** Reads a plan (or a report that carries one) from a file: --plan PATH. */
import { LrError, unwrap } from '../errors.js';
import { parsePlan, type PlanFile } from '../optimize/plan.js';
import { readSideInput } from '../util/bounds.js';

export function readPlanFile(planPath: string, maxBytes?: number): PlanFile {
  // A regular file within the bound: a FIFO or a device as --plan would block or never end.
  const bytes = unwrap(readSideInput(planPath, 'plan', maxBytes));
  let text: string;
  try { text = new TextDecoder().decode(bytes); } catch (e) { throw new LrError('unsupported', `plan ${planPath} cannot be read as text: ${(e as Error).message}`); }
  return parsePlan(text, planPath);
}
