/**
 * Fuzz, structure level: decoded models edited and re-encoded — dims that disagree with
 * the data, huge and negative dims, duplicate names, dangling inputs, cycles, missing
 * initializers, unknown ops and domains, IR/opset out of range, NaN/Inf weights, bad
 * attributes and data types, broken subgraphs, recursive functions, long Identity chains.
 */
import { describe, expect, it } from 'vitest';
import { describeFailures, runSeedFromEnv, runSuite, scaled, summary } from './harness.js';

describe('fuzz: structural mutations', () => {
  it('each case exits 0/1 with a loadable OUT, or 2 with one clean line; no hang, no crash, IN untouched', async () => {
    const r = await runSuite({
      family: 'struct',
      cases: scaled(800),
      runSeed: runSeedFromEnv(2),
      bases: { wake: 3, cls: 1, vad: 1, mlp: 3, conv: 2, ifm: 2, constw: 1, ir4: 1, shared: 1 },
      optimizeRate: { wake: 0.15, mlp: 0.3, conv: 0.3, ifm: 0.3, constw: 0.3, ir4: 0.3, shared: 0.3 },
    });
    console.log(summary(r));
    expect(r.failures, `LR_FUZZ_SEED=${r.runSeed}\n${describeFailures(r.failures)}`).toEqual([]);
    expect(r.cases).toBe(scaled(800));
  }, 600_000);
});
