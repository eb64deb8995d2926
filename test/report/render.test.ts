import { describe, expect, it } from 'vitest';
import { renderReport, type Report } from '../../src/report/report.js';

const side = (file: string) => ({ file, bytes: 1000, irVersion: 8, opsets: { '': 13 }, nodeCount: 3, ops: { Conv: 1 }, params: 100 });

function withCosine(cosine: number, worst: number): Report {
  return {
    schemaVersion: 1, tool: 'onnx-lr', seed: 0, policy: 'auto, energy 0.999', policyKind: 'energy', input: side('a.onnx'), output: side('b.onnx'), layers: [], seconds: 1, notes: [],
    verify: {
      pass: cosine >= 0.99, reasons: [], seed: 0, runs: 3, inputDims: {}, defaulted: [], minCosine: 0.99,
      outputs: [{ name: 'mask', dims: [1, 4], maxAbs: 0.5, meanAbs: 0.01, relL2: 0.14, cosine, mismatches: 0, pass: cosine >= 0.99, reasons: [], worstFeed: { index: 2, cosine: worst, relL2: 0.2 } }],
    },
  };
}

describe('renderReport', () => {
  it('prints cosines rounded down, so one under the threshold never reads as meeting it', () => {
    const fail = renderReport(withCosine(0.98996, 0.97899));
    const row = fail.split('\n').find((l) => l.startsWith('mask'))!;
    expect(row).toContain('0.9899');
    expect(row).toMatch(/FAIL$/);
    expect(row).not.toContain('0.990');
    expect(fail).toContain('mask: worst of the 3 inputs is #3, cosine 0.9789, rel L2 2.00e-1');
    const ok = renderReport(withCosine(0.99, 0.985)).split('\n').find((l) => l.startsWith('mask'))!;
    expect(ok).toContain('0.9900');
    expect(ok).toMatch(/ok$/);
  });
});

describe('the latency line says how outputs were treated while timed', () => {
  const pct = (p50: number) => ({ p10: p50, p50, p90: p50 });
  const latency = (outputsKept: boolean) => ({ originalMs: pct(20), optimizedMs: pct(10), speedup: 2, runs: 12, backend: 'node' as const, threads: 1, outputsKept });
  it('kept in ORT, or copied out when they could not be kept', () => {
    const line = (kept: boolean) => renderReport({ ...withCosine(0.995, 0.99), latency: latency(kept) }).split('\n').find((l) => l.startsWith('latency ORT-node:'))!;
    expect(line(true)).toMatch(/speed-up 2\.00x {2}\[12 runs each, 1 thread\(s\), outputs kept in ORT, not copied out\]$/);
    expect(line(false)).toMatch(/\[12 runs each, 1 thread\(s\), outputs copied out to JS \(a model over 512 MiB or with external data, or outputs ORT would not cut\)\]$/);
  });
});
