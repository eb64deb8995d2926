import { describe, expect, it } from 'vitest';
import { measureLatency } from '../../src/verify/latency.js';
import { CLS, HELLO } from './models.js';

const sane = (p: { p10: number; p50: number; p90: number }) => {
  expect(p.p10).toBeGreaterThan(0);
  expect(p.p10).toBeLessThanOrEqual(p.p50);
  expect(p.p50).toBeLessThanOrEqual(p.p90);
};

describe('measureLatency', () => {
  it('a sub-millisecond model gets many runs within the time budget', async () => {
    const r = await measureLatency({ path: HELLO }, { path: HELLO }, { minSeconds: 0.2 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    sane(r.value.originalMs);
    sane(r.value.optimizedMs);
    expect(r.value.originalMs.p50).toBeLessThan(5);
    expect(r.value.runs).toBeGreaterThan(20); // ~0.05 ms per run: the budget, not minRuns, stops it
    expect(r.value.speedup).toBeCloseTo(r.value.originalMs.p50 / r.value.optimizedMs.p50, 12);
    expect(r.value).toMatchObject({ backend: 'node', threads: 1 });
  });

  it('stops at maxRuns, and runs minRuns even with no time budget', async () => {
    const capped = await measureLatency({ path: HELLO }, { path: HELLO }, { minRuns: 5, maxRuns: 7, minSeconds: 100 });
    expect(capped.ok && capped.value.runs).toBe(7);
    const floor = await measureLatency({ path: CLS }, { path: CLS }, { minRuns: 20, minSeconds: 0, shapes: { x: [1, 3, 48, 192] } });
    expect(floor.ok).toBe(true);
    if (!floor.ok) return;
    expect(floor.value.runs).toBe(20);
    sane(floor.value.originalMs);
  });

  it('reports errors from loading', async () => {
    const r = await measureLatency({ path: HELLO }, { path: 'missing.onnx' });
    expect(!r.ok && r.error.kind).toBe('io');
  });
});
