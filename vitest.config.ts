import { defineConfig } from 'vitest/config';
import { hugePageTunables, TUNABLES_ENV } from './src/util/huge-pages.js';

// The test processes (forked from this one, so set before they start) get glibc's huge
// pages as the CLI's worker does (src/util/huge-pages.ts): fresh memory is much of the ORT
// runs' time where page faults are dear.
process.env[TUNABLES_ENV] = hugePageTunables(process.env[TUNABLES_ENV]);

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // vm-based pools break onnxruntime-node's typed-array instanceof checks.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
