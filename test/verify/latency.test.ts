import { describe, expect, it } from 'vitest';
import { ok } from '../../src/errors.js';
import { measureLatency, timePair, timeSessions } from '../../src/verify/latency.js';
import type { Session } from '../../src/verify/session.js';
import type { Feeds } from '../../src/verify/tensor.js';
import { CLS, HELLO } from './models.js';

const sane = (p: { p10: number; p50: number; p90: number }) => {
  expect(p.p10).toBeGreaterThan(0);
  expect(p.p10).toBeLessThanOrEqual(p.p50);
  expect(p.p50).toBeLessThanOrEqual(p.p90);
};

const MS = 1_000_000n;

/**
 * Two stand-in sessions on one fake clock: each run is logged and advances the clock by
 * its cost. The first `slowRuns` runs of each take 1 s (first runs allocate and pick
 * kernels), after that the original takes 2 ms and the optimized 1 ms, so any timed
 * warm-up, or any run timed against the wrong model, shows in the figures.
 */
function fakePair(slowRuns: number) {
  const log: string[] = [];
  const prepared: Feeds[] = [];
  let now = 0n;
  const session = (label: 'A' | 'B', ms: bigint): Session => {
    let calls = 0;
    return {
      backend: 'node', label, inputs: [{ name: 'x', isTensor: true, type: 'float32', shape: [1] }], outputs: [],
      run: async () => ok({}),
      prepare: (feeds) => {
        prepared.push(feeds);
        return ok(async () => {
          log.push(label);
          now += (calls++ < slowRuns ? 1000n : ms) * MS;
        });
      },
      release: async () => {},
    };
  };
  return { a: session('A', 2n), b: session('B', 1n), log, prepared, clock: () => now };
}

describe('timePair (fake sessions, fake clock)', () => {
  it('warms each model up 3 times untimed, then times them interleaved, alternating A B / B A', async () => {
    const f = fakePair(3);
    const r = await timePair(f.a, f.b, { clock: f.clock, minRuns: 4, minSeconds: 0 });
    if (!r.ok) throw r.error;
    expect(f.log).toEqual(['A', 'B', 'A', 'B', 'A', 'B', 'A', 'B', 'B', 'A', 'A', 'B', 'B', 'A']);
    // No 1 s warm-up run among the timed ones: every timed run is the model's own cost.
    expect(r.value.originalMs).toEqual({ p10: 2, p50: 2, p90: 2 });
    expect(r.value.optimizedMs).toEqual({ p10: 1, p50: 1, p90: 1 });
    expect(r.value.speedup).toBe(2);
    expect(r.value.runs).toBe(4);
    // Both models run on the same feeds.
    expect(f.prepared).toHaveLength(2);
    expect(f.prepared[1]).toBe(f.prepared[0]);
  });

  it('more warm-ups when asked; fewer than 3 are raised to 3', async () => {
    const five = fakePair(5);
    const r5 = await timePair(five.a, five.b, { clock: five.clock, minRuns: 2, minSeconds: 0, warmup: 5 });
    expect(five.log.slice(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) => (i % 2 ? 'B' : 'A')));
    expect(r5.ok && r5.value.originalMs.p90).toBe(2);
    const one = fakePair(3);
    const r1 = await timePair(one.a, one.b, { clock: one.clock, minRuns: 2, minSeconds: 0, warmup: 1 });
    expect(one.log).toHaveLength(6 + 4);
    expect(r1.ok && r1.value.originalMs.p90).toBe(2);
  });

  it('warmupSeconds ends the warm-up once it took that long, after one run of each', async () => {
    // The first run of each takes 1 s: past 0.5 s after the first pair, no more warm-up.
    const slow = fakePair(1);
    const r = await timePair(slow.a, slow.b, { clock: slow.clock, minRuns: 2, minSeconds: 0, warmupSeconds: 0.5 });
    expect(slow.log).toEqual(['A', 'B', 'A', 'B', 'B', 'A']);
    expect(r.ok && r.value.originalMs.p90).toBe(2);
    // Warm-ups of fast models stay three pairs.
    const fast = fakePair(0);
    await timePair(fast.a, fast.b, { clock: fast.clock, minRuns: 2, minSeconds: 0, warmupSeconds: 0.5 });
    expect(fast.log).toHaveLength(6 + 4);
  });

  it('after minRuns, runs until the timed runs of both took minSeconds; warm-ups do not count', async () => {
    // 3 ms per timed pair: 100 ms are spent after 34 pairs. Counting the 6 s of warm-ups
    // would stop it at minRuns.
    const f = fakePair(3);
    const r = await timePair(f.a, f.b, { clock: f.clock, minRuns: 20, minSeconds: 0.1 });
    expect(r.ok && r.value.runs).toBe(34);
    const capped = fakePair(3);
    const c = await timePair(capped.a, capped.b, { clock: capped.clock, minRuns: 5, maxRuns: 7, minSeconds: 100 });
    expect(c.ok && c.value.runs).toBe(7);
  });

  it('maxSeconds stops slow models early, after fewestRuns each; fast ones still get minRuns', async () => {
    // 3 ms per timed pair: 10 ms are spent after 4 pairs, so fewestRuns 6 decides.
    const slow = fakePair(3);
    const r = await timePair(slow.a, slow.b, { clock: slow.clock, minRuns: 15, minSeconds: 1, maxSeconds: 0.01, fewestRuns: 6 });
    expect(r.ok && r.value.runs).toBe(6);
    expect(r.ok && r.value.originalMs.p50).toBe(2);
    // Past the floor, the bound: 30 ms after 10 pairs.
    const later = fakePair(3);
    const l = await timePair(later.a, later.b, { clock: later.clock, minRuns: 15, minSeconds: 1, maxSeconds: 0.03, fewestRuns: 2 });
    expect(l.ok && l.value.runs).toBe(10);
    // Within the bound nothing changes.
    const fast = fakePair(3);
    const q = await timePair(fast.a, fast.b, { clock: fast.clock, minRuns: 20, minSeconds: 0.1, maxSeconds: 10 });
    expect(q.ok && q.value.runs).toBe(34);
  });
});

describe('timeSessions (fake sessions, fake clock)', () => {
  /** Sessions on one fake clock: each run is logged; the first run of each takes 1 s, then `ms[i]`. */
  function fakes(ms: readonly bigint[]) {
    const log: string[] = [];
    let now = 0n;
    const sessions = ms.map((cost, i): Session => {
      let calls = 0;
      const label = String.fromCharCode(65 + i);
      return {
        backend: 'node', label, inputs: [{ name: 'x', isTensor: true, type: 'float32', shape: [1] }], outputs: [],
        run: async () => ok({}),
        prepare: () => ok(async () => { log.push(label); now += (calls++ < 1 ? 1000n : cost) * MS; }),
        release: async () => {},
      };
    });
    return { sessions, log, clock: () => now };
  }

  it('one warm-up for all, then rounds that start one session further along each time; each session its own times', async () => {
    const f = fakes([4n, 1n, 2n]);
    const r = await timeSessions(f.sessions, { clock: f.clock, minRuns: 3, minSeconds: 0, warmupSeconds: 0.5 });
    if (!r.ok) throw r.error;
    expect(f.log).toEqual(['A', 'B', 'C', 'A', 'B', 'C', 'B', 'C', 'A', 'C', 'A', 'B']);
    expect(r.value.runs).toBe(3);
    expect(r.value.ms.map((p) => p.p50)).toEqual([4, 1, 2]);
  });

  it('the time budget counts every session: maxSeconds stops after fewestRuns rounds', async () => {
    // 7 ms per round: 20 ms are spent after 3 rounds, and fewestRuns 4 decides.
    const f = fakes([4n, 1n, 2n]);
    const r = await timeSessions(f.sessions, { clock: f.clock, minRuns: 15, minSeconds: 1, maxSeconds: 0.02, fewestRuns: 4 });
    expect(r.ok && r.value.runs).toBe(4);
  });
});

describe('measureLatency', () => {
  it('times both models in ORT: at least minRuns runs, ordered percentiles, the speed-up from the medians', async () => {
    const r = await measureLatency({ path: HELLO }, { path: HELLO }, { minSeconds: 0.2 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    sane(r.value.originalMs);
    sane(r.value.optimizedMs);
    expect(r.value.runs).toBeGreaterThanOrEqual(20);
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
