/**
 * Fuzz, external data: models saved with external data, then references pointing outside
 * the folder (relative escapes, absolute paths, symlinks), at folders, FIFOs, missing or
 * truncated files, offsets and lengths past the end or malformed, huge dims.
 */
import { describe, it } from 'vitest';
import { expectSuiteClean } from './harness.js';

describe('fuzz: external-data mutations', () => {
  it('each case exits 0/1 with a loadable OUT, or 2 with one clean line; nothing outside the folder is read', async () => {
    await expectSuiteClean({
      family: 'external',
      cases: 450,
      seed: 3,
      bases: { wake: 3, mlp: 3, conv: 2, ifm: 2, shared: 1, vad: 1 },
      optimizeRate: { wake: 0.2, mlp: 0.3, conv: 0.3, ifm: 0.3, shared: 0.3 },
    });
  }, 600_000);
});
