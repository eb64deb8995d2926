/**
 * Per-layer decisions: what `onnx-lr plan` writes and `optimize --plan` applies exactly.
 * A plan names layers by node name (or first output when unnamed) and fixes pass and ranks.
 */
import { LrError } from '../errors.js';
import type { LayerSensitivity } from './sensitivity.js';

export interface LayerRecord {
  name: string;
  op: string;
  weightShape: number[];
  /** Where the weight lives: initializer, Constant node, outer scope of a subgraph. */
  where: string;
  pass?: string;
  method?: string;
  ranks?: number[];
  paramsBefore: number;
  paramsAfter: number;
  /** MACs for one run at the shapes used, when known. */
  macsBefore?: number;
  macsAfter?: number;
  /** Relative Frobenius error of the reconstructed weight. */
  relError?: number;
  /** Relative output error on the calibration statistics (data-aware rewrites). */
  dataError?: number;
  /** Time spent on this layer (factorization and rewrite), ms. */
  ms: number;
  skipped?: boolean;
  reason?: string;
  /** The nodes that replaced the layer, first to last. */
  nodes?: string[];
  /** How the method was chosen, when more than one was tried (--method auto on k×k convs). */
  note?: string;
}

export interface PlanFile {
  version: 1;
  model: string;
  policy: string;
  layers: LayerRecord[];
  /** Per-layer sensitivity measurements, cached so a budgeted run can reuse them. */
  sensitivity?: LayerSensitivity[];
}

export function parsePlan(text: string, file: string): PlanFile {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new LrError('parse', `plan ${file} is not valid JSON: ${(e as Error).message}`);
  }
  const p = j as Partial<PlanFile>;
  if (typeof p !== 'object' || p === null || !Array.isArray(p.layers)) {
    throw new LrError('parse', `plan ${file}: expected an object with a "layers" array`);
  }
  p.layers.forEach((l, i) => {
    if (typeof l?.name !== 'string') throw new LrError('parse', `plan ${file}: layers[${i}] has no "name"`);
    if (!l.skipped) {
      if (typeof l.pass !== 'string') throw new LrError('parse', `plan ${file}: layer ${l.name} has no "pass" (or set "skipped": true)`);
      if (!Array.isArray(l.ranks) || !l.ranks.every((r) => Number.isInteger(r) && r > 0)) {
        throw new LrError('parse', `plan ${file}: layer ${l.name} needs "ranks" as positive integers`);
      }
    }
  });
  return p as PlanFile;
}
