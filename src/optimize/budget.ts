/**
 * Global rank allocation. Each layer offers candidates (from sensitivity): a saving in
 * the budgeted unit and a measured output error when compressed alone. Assuming errors
 * of different layers add in energy (Σ‖Δy‖² — a first-order model, checked afterwards
 * in ORT), a greedy on error per saved unit picks, move by move, the step with the best
 * saving per added error: to reach a size/MAC/latency target with the least error, or to
 * save the most within an error budget.
 */
import type { Candidate, LayerSensitivity } from './sensitivity.js';

export type Budget =
  | { kind: 'params' | 'macs' | 'latency'; fraction: number }
  /** Error budgets: a predicted Σ‖Δy‖²/‖y‖² for the allocation; with `top1`, the measured
   *  top-1 agreement on calibration inputs decides instead and err2 is the first guess;
   *  `cosine` is what the user asked for when err2 came from a cosine (for the report). */
  | { kind: 'error'; err2: number; top1?: number; cosine?: number };

export interface Allocation {
  /** Chosen candidate per layer name (layers left alone are absent). */
  choices: Map<string, Candidate>;
  /** Predicted Σ of the chosen layers' squared relative output errors. */
  predictedErr2: number;
  /** Total of the budgeted unit before and after (params, MACs, or estimated latency units). */
  before: number;
  after: number;
  met: boolean;
  why?: string;
}

/** The saving of a candidate in the budget's unit (MACs scale per-position costs by the layer's MACs). */
export function saving(layer: LayerSensitivity, c: Candidate, unit: Budget['kind']): number {
  if (unit === 'params' || unit === 'error') return layer.before.params - c.after.params;
  // Latency budgets count measured milliseconds; an untimed layer saves nothing there.
  if (unit === 'latency') return layer.ms !== undefined && c.ms !== undefined ? layer.ms - c.ms : 0;
  const scale = layer.macs !== undefined && layer.before.macsPerPosition > 0 ? layer.macs / layer.before.macsPerPosition : 1;
  return (layer.before.macsPerPosition - c.after.macsPerPosition) * scale;
}

/**
 * @param total the model's total in the budget's unit (all params, or all layer MACs):
 *   targets are fractions of it.
 * @param unit for 'error' budgets, what to save (params by default).
 * @param initial choices to start from (multi-stage runs).
 * @param stepwise move each layer one candidate at a time (multi-stage runs, early stages).
 */
export function allocate(layers: readonly LayerSensitivity[], budget: Budget, total: number, unit: 'params' | 'macs' | 'latency' = 'params',
  initial?: ReadonlyMap<string, Candidate>, stepwise = false): Allocation {
  const u = budget.kind === 'error' ? unit : budget.kind;
  // A later stage starts where the previous one left each layer, and only moves on from there.
  const state = new Map<string, Candidate>(initial);
  let err2 = 0;
  let saved = 0;
  for (const [name, c] of state) {
    const layer = layers.find((l) => l.name === name);
    if (layer) { saved += saving(layer, c, u); err2 += c.outErr2; }
  }
  const target = budget.kind === 'error' ? undefined : total * (1 - budget.fraction);
  const done = (): boolean => target !== undefined && saved >= target;
  for (;;) {
    if (done()) break;
    let best: { layer: LayerSensitivity; c: Candidate; ds: number; de: number; score: number } | undefined;
    for (const layer of layers) {
      const cur = state.get(layer.name);
      const curSave = cur ? saving(layer, cur, u) : 0;
      const curErr = cur ? cur.outErr2 : 0;
      // Stepwise (the early stages of a multi-stage run): only the next rung down each
      // layer's ladder, so a stage stops near its target instead of jumping past it.
      const next = stepwise ? layer.candidates.reduce<number>((m, c) => {
        const d = saving(layer, c, u) - curSave;
        return d > 0 && Number.isFinite(c.outErr2) ? Math.min(m, d) : m;
      }, Infinity) : undefined;
      for (const c of layer.candidates) {
        const ds = saving(layer, c, u) - curSave;
        if (ds <= 0 || !Number.isFinite(c.outErr2) || (next !== undefined && ds !== next)) continue;
        const de = Math.max(c.outErr2 - curErr, 0);
        if (budget.kind === 'error' && err2 + de > budget.err2) continue;
        // Saving per unit of added error; free savings first, the larger the better.
        const score = ds / (de + 1e-12);
        if (!best || score > best.score || (score === best.score && ds > best.ds)) best = { layer, c, ds, de, score };
      }
    }
    if (!best) break;
    state.set(best.layer.name, best.c);
    saved += best.ds;
    err2 += best.de;
  }
  const met = budget.kind === 'error' ? err2 <= budget.err2 : saved >= (target ?? 0);
  const res: Allocation = { choices: state, predictedErr2: err2, before: total, after: total - saved, met };
  if (!met) res.why = `the most the candidates can save is ${(saved / Math.max(total, 1) * 100).toFixed(1)}% of ${u} (target ${((target ?? 0) / Math.max(total, 1) * 100).toFixed(1)}%): layers that are small, depthwise or above break-even cannot be compressed`;
  return res;
}
