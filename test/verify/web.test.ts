import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { measureLatency } from '../../src/verify/latency.js';
import { createSession } from '../../src/verify/session.js';
import { compareSessions } from '../../src/verify/verify.js';
import { CLS, HELLO } from './models.js';

describe('onnxruntime-web (wasm) backend', () => {
  it('runs real models and matches ORT-node closely', async () => {
    for (const [path, shapes] of [[HELLO, {}], [CLS, { x: [1, 3, 48, 192] }]] as const) {
      const node = await createSession({ path });
      const web = await createSession({ bytes: readFileSync(path) }, { backend: 'web' });
      if (!node.ok) throw node.error;
      if (!web.ok) throw web.error;
      expect(web.value.backend).toBe('web');
      expect(web.value.inputs).toEqual(node.value.inputs);
      const r = await compareSessions(node.value, web.value, { shapes, atol: 1e-4, rtol: 1e-3, minCosine: 0.99999, runs: 2 });
      await node.value.release();
      await web.value.release();
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.value.reasons).toEqual([]);
      expect(r.value.pass).toBe(true);
      // Different kernels (wasm SIMD vs native AVX-512): close, not necessarily identical.
      expect(r.value.outputs[0]!.maxAbs).toBeLessThan(1e-4);
    }
  });

  it('bad model bytes are a one-line verify-mismatch error', async () => {
    const r = await createSession({ bytes: new Uint8Array([8, 1, 2, 3]) }, { backend: 'web' });
    expect(!r.ok && r.error.kind).toBe('verify-mismatch');
    expect(!r.ok && r.error.message).toMatch(/^ORT \(web\) failed to load <4 bytes>: /);
  });

  it('latency can be measured on the web backend', async () => {
    const r = await measureLatency({ path: HELLO }, { path: HELLO }, { backend: 'web', minSeconds: 0.1 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.backend).toBe('web');
    expect(r.value.originalMs.p10).toBeGreaterThan(0);
    expect(r.value.originalMs.p10).toBeLessThanOrEqual(r.value.originalMs.p90);
  });
});
