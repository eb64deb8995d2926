/**
 * Factorizations send their large products to ORT (a worker thread). When that worker
 * cannot start, or stops answering, the products run in JS: the run still succeeds, the
 * report says so, and the decisions are the same.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { LrError } from '../../src/errors.js';
import { createSyncOrtGemm } from '../../src/linalg/ort-gemm-sync.js';
import type { Report } from '../../src/report/report.js';
import { nonProgress, runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

// A pass-through spy, so a test can make the worker fail (or time out) for one run.
vi.mock('../../src/linalg/ort-gemm-sync.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/linalg/ort-gemm-sync.js')>();
  return { ...m, createSyncOrtGemm: vi.fn(m.createSyncOrtGemm) };
});
const actual = await vi.importActual<typeof import('../../src/linalg/ort-gemm-sync.js')>('../../src/linalg/ort-gemm-sync.js');

const ARGS = ['--shape', 'x:1x3x48x192', '--energy', '0.95', '--no-latency', '--json'];

async function optimize(dir: string, name: string): Promise<{ rep: Report; bytes: Buffer }> {
  const out = path.join(dir, name);
  const r = await runCli('optimize', REAL.cls, out, ...ARGS);
  expect(nonProgress(r.err)).toEqual([]);
  expect(r.code).toBe(0);
  return { rep: JSON.parse(r.out) as Report, bytes: readFileSync(out) };
}

const decisions = (rep: Report) => rep.layers.map((l) => [l.name, l.skipped ?? false, l.pass, l.ranks]);

describe('products in JS when ORT\'s GEMM worker is unavailable', () => {
  it('a worker that does not start: the run succeeds in JS and the report says why', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-jsgemm-'));
    const normal = await optimize(dir, 'a.onnx');
    expect(normal.rep.notes.some((n) => /ran in JS/.test(n))).toBe(false);
    vi.mocked(createSyncOrtGemm).mockImplementationOnce(async () => {
      throw new LrError('numeric', 'the ORT GEMM worker did not start: exited with code 1');
    });
    const js = await optimize(dir, 'b.onnx');
    expect(js.rep.notes).toContain('factorizations ran in JS (slower): the ORT GEMM worker did not start: exited with code 1');
    expect(decisions(js.rep)).toEqual(decisions(normal.rep));
    expect(js.rep.layers.some((l) => !l.skipped)).toBe(true);
    expect(js.rep.verify!.pass).toBe(true);
  });

  it('a worker whose ORT fails every product: each falls back to JS, counted in the report', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-jsgemm-'));
    const normal = await optimize(dir, 'a.onnx');
    // Every product goes to the worker (minFlops 0), where ORT refuses to make a session
    // with -1 threads.
    vi.mocked(createSyncOrtGemm).mockImplementationOnce((o) => actual.createSyncOrtGemm({ ...o, minFlops: 0, threads: -1 }));
    const js = await optimize(dir, 'b.onnx');
    const note = js.rep.notes.find((n) => /product\(s\) ran in JS after ORT's GEMM failed or did not answer/.test(n));
    expect(note).toBeDefined();
    expect(Number(/^(\d+) product/.exec(note!)![1])).toBeGreaterThan(0);
    expect(decisions(js.rep)).toEqual(decisions(normal.rep));
    expect(js.rep.verify!.pass).toBe(true);
  });
});
