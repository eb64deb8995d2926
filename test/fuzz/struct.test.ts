/**
 * Fuzz, structure level: decoded models edited and re-encoded — dims that disagree with
 * the data, huge and negative dims, duplicate names, dangling inputs, cycles, missing
 * initializers, unknown ops and domains, IR/opset out of range, NaN/Inf weights, bad
 * attributes and data types, broken subgraphs, recursive functions, long Identity chains.
 */
import { describe, it } from 'vitest';
import { expectSuiteClean } from './harness.js';

describe('fuzz: structural mutations', () => {
  it('each case exits 0/1 with a loadable OUT, or 2 with one clean line; no hang, no crash, IN untouched', async () => {
    await expectSuiteClean({
      family: 'struct',
      cases: 800,
      seed: 2,
      bases: { wake: 3, cls: 1, vad: 1, mlp: 3, conv: 2, ifm: 2, constw: 1, ir4: 1, shared: 1 },
      optimizeRate: { wake: 0.15, mlp: 0.3, conv: 0.3, ifm: 0.3, constw: 0.3, ir4: 0.3, shared: 0.3 },
    });
  }, 600_000);
});
