/**
 * Fuzz, wire level: bit flips, truncations, wire-type changes (in place and re-encoded),
 * length and varint edits, dropped and duplicated fields, on the real and synthetic models,
 * through inspect, convert and (for a share of cases) optimize. See harness.ts for the
 * contract every case must meet. LR_FUZZ_SEED / LR_FUZZ_SCALE vary and lengthen the run.
 */
import { describe, it } from 'vitest';
import { expectSuiteClean } from './harness.js';

describe('fuzz: byte-level mutations', () => {
  it('each case exits 0/1 with a loadable OUT, or 2 with one clean line; no hang, no crash, IN untouched', async () => {
    await expectSuiteClean({
      family: 'bytes',
      cases: 1100,
      seed: 1,
      bases: { wake: 4, cls: 1, vad: 1, mlp: 3, conv: 3, ifm: 2, constw: 1, ir4: 1, shared: 1 },
      optimizeRate: { wake: 0.1, mlp: 0.2, conv: 0.2, ifm: 0.2, constw: 0.2, ir4: 0.2, shared: 0.2 },
    });
  }, 600_000);
});
