import { describe, expect, it } from 'vitest';
import { allocate, type Budget } from '../../src/optimize/budget.js';
import type { LayerSensitivity } from '../../src/optimize/sensitivity.js';

/** A layer with params p and candidates at the given (params after, output err²) points. */
function layer(name: string, p: number, cands: [number, number][], macs?: number): LayerSensitivity {
  return {
    name, op: 'MatMul', before: { params: p, macsPerPosition: p }, macs,
    candidates: cands.map(([after, e]) => ({ pass: 'matmul-svd', ranks: [after], after: { params: after, macsPerPosition: after }, relError: 0, outErr2: e })),
  };
}

const LAYERS = [
  layer('robust', 1000, [[500, 1e-4], [250, 4e-4], [100, 1e-3]], 10_000),
  layer('fragile', 1000, [[500, 1e-2], [250, 5e-2]], 100_000),
  layer('small', 100, [[50, 1e-6]], 100),
];
const TOTAL = 2100;

describe('global allocation', () => {
  it('meets a parameter target with the least predicted error', () => {
    const a = allocate(LAYERS, { kind: 'params', fraction: 0.6 }, TOTAL);
    expect(a.met).toBe(true);
    expect(a.after).toBeLessThanOrEqual(0.6 * TOTAL);
    // The robust layer goes all the way before the fragile one is touched.
    expect(a.choices.get('robust')!.after.params).toBe(100);
    expect(a.choices.get('small')!.after.params).toBe(50);
    expect(a.predictedErr2).toBeLessThan(2e-2);
  });

  it('says why when a target cannot be met', () => {
    const a = allocate(LAYERS, { kind: 'params', fraction: 0.1 }, TOTAL);
    expect(a.met).toBe(false);
    expect(a.why).toMatch(/the most the candidates can save/);
    // It still takes everything it can.
    expect(a.after).toBe(TOTAL - 900 - 750 - 50);
  });

  it('an error budget is never exceeded and is spent on the best savings', () => {
    const budget: Budget = { kind: 'error', err2: 1.2e-3 };
    const a = allocate(LAYERS, budget, TOTAL);
    expect(a.predictedErr2).toBeLessThanOrEqual(1.2e-3);
    expect(a.choices.has('fragile')).toBe(false);
    expect(a.choices.get('robust')!.after.params).toBe(100);
  });

  it('a MAC target weighs layers by their MACs', () => {
    const a = allocate(LAYERS, { kind: 'macs', fraction: 0.8 }, 110_100);
    expect(a.met).toBe(true);
    // Only the MAC-heavy fragile layer can save 20% of MACs.
    expect(a.choices.has('fragile')).toBe(true);
  });

  it('nothing to allocate: met for an error budget, not for a size target', () => {
    expect(allocate([], { kind: 'error', err2: 0.01 }, 10).met).toBe(true);
    expect(allocate([], { kind: 'params', fraction: 0.5 }, 10).met).toBe(false);
  });
});
