/**
 * Between an allocation that met an error budget and a larger one that did not.
 *
 * The error search (error-search.ts) scales one allocation budget, and the greedy
 * allocation is not smooth in it: on ISNet a budget 1.2x larger changed many layers at
 * once, and the measured error went from half the target to past it, so the search kept
 * the allocation at half the target and the speed between was lost. Here the two
 * allocations are joined by a path: the layers where they differ, best deal first (what
 * the failed one saves more on that layer per unit of predicted error it adds), and the
 * held allocation with the first k of them switched over is measured for a k found by
 * bisection (budget-run.ts). Each step is a real measurement, so the predicted errors only
 * order the path; whether a step holds is what ORT says.
 */
import type { Candidate, LayerSensitivity } from '../report/records.js';
import { saving, type Allocation } from './budget.js';

export type SaveUnit = 'params' | 'macs' | 'latency';

/** The same rewrite of a layer (or both none). */
function same(a: Candidate | undefined, b: Candidate | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.pass === b.pass && a.ranks.join(',') === b.ranks.join(','));
}

/**
 * The layers where `failed` saves more than `held`, ordered by saving gained per unit of
 * predicted error added (free gains first, then the larger); the layers where the failed
 * allocation saves no more are left as the held one has them.
 */
export function bridgeOrder(sens: readonly LayerSensitivity[], held: ReadonlyMap<string, Candidate>, failed: ReadonlyMap<string, Candidate>, unit: SaveUnit): string[] {
  const deals: { name: string; ds: number; score: number }[] = [];
  for (const layer of sens) {
    const h = held.get(layer.name);
    const f = failed.get(layer.name);
    if (same(h, f) || !f) continue;
    const ds = saving(layer, f, unit) - (h ? saving(layer, h, unit) : 0);
    if (!(ds > 0)) continue;
    const de = Math.max(f.outErr2 - (h?.outErr2 ?? 0), 0);
    deals.push({ name: layer.name, ds, score: ds / (de + 1e-12) });
  }
  deals.sort((a, b) => b.score - a.score || b.ds - a.ds);
  return deals.map((d) => d.name);
}

/** What an allocation saves in `unit` (its own before/after are NaN for latency error budgets: nothing times the whole model then). */
export function savingOf(sens: readonly LayerSensitivity[], alloc: Allocation, unit: SaveUnit): number {
  let saved = 0;
  for (const layer of sens) {
    const c = alloc.choices.get(layer.name);
    if (c) saved += saving(layer, c, unit);
  }
  return saved;
}

/** The held allocation with the layers `names` switched to the failed allocation's choice. */
export function mixAllocations(sens: readonly LayerSensitivity[], held: Allocation, failed: Allocation, names: readonly string[], unit: SaveUnit): Allocation {
  const choices = new Map(held.choices);
  for (const n of names) {
    const f = failed.choices.get(n);
    if (f) choices.set(n, f);
  }
  let err2 = 0;
  for (const c of choices.values()) err2 += c.outErr2;
  const mixed: Allocation = { choices, predictedErr2: err2, before: held.before, after: NaN, met: true };
  mixed.after = held.before - savingOf(sens, mixed, unit);
  return mixed;
}

/** Bisection state on the path: `lo` switched layers held, `hi` did not (or was not tried). */
export interface Bridge {
  names: string[];
  lo: number;
  hi: number;
  steps: number;
}

/** Measurements the bridge makes at most (each one a fit of the changed layers and a run on every calibration feed). */
export const BRIDGE_STEPS = 4;

/** The next number of layers to switch, or undefined when the bisection is over. */
export function nextBridgeStep(b: Bridge, maxSteps = BRIDGE_STEPS): number | undefined {
  if (b.steps >= maxSteps || b.hi - b.lo <= 1) return undefined;
  return Math.ceil((b.lo + b.hi) / 2);
}
