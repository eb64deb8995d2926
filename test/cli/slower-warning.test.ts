/**
 * A compressed model that runs slower than the original is said loudly: a warning on
 * stderr and in the report's notes. The timings are fabricated here (a test may not depend
 * on the machine's speed); the rule itself is checked on its edges.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import type { Report } from '../../src/report/report.js';
import { measureLatency, slowerWarning, type LatencyStats } from '../../src/verify/latency.js';
import { ok } from '../../src/errors.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

vi.mock('../../src/verify/latency.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/verify/latency.js')>();
  return { ...m, measureLatency: vi.fn(m.measureLatency) };
});

const pct = (p50: number, spread = 0.01): LatencyStats['originalMs'] => ({ p10: p50 * (1 - spread), p50, p90: p50 * (1 + spread) });
const stats = (a: number, o: number, spread = 0.01): LatencyStats =>
  ({ originalMs: pct(a, spread), optimizedMs: pct(o, spread), speedup: a / o, runs: 25, backend: 'node', threads: 1, outputsKept: true });

describe('slowerWarning', () => {
  it('warns only when the optimized model is clearly slower', () => {
    expect(slowerWarning(stats(69, 97))).toMatch(/^OUT runs slower than IN in ORT-node: p50 97\.000 ms against 69\.000 ms \(0\.71x\)/);
    expect(slowerWarning(stats(20, 20.2))).toBeUndefined(); // within 2%
    expect(slowerWarning(stats(20, 21, 0.2))).toBeUndefined(); // 5% slower, but its p10 (16.8) is under the original's p50: noise
    expect(slowerWarning(stats(20, 15))).toBeUndefined(); // faster
  });

  it('optimize prints it and keeps it in the report', async () => {
    vi.mocked(measureLatency).mockImplementationOnce(async () => ok(stats(69, 97)));
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-slower-'));
    const r = await runCli('optimize', REAL.wake, path.join(dir, 'o.onnx'), '--energy', '0.995', '--json');
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/^onnx-lr: warning: OUT runs slower than IN in ORT-node/m);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.notes.filter((n) => n.startsWith('warning: OUT runs slower'))).toHaveLength(1);
  });
});
