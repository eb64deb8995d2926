/**
 * Verification holds one model at a time (issue 16: a 2.4 GiB model verified at 2.25× its
 * size with both ORT sessions and the new factors in JS alive at once). Pinned without a
 * big model: the order of session opens and releases, verdicts equal to the interleaved
 * comparison's, and the JS payloads gone before ORT loads anything. Peak figures on a big
 * model: npm run bench:memory.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { err, ok, type Result } from '../../src/errors.js';
import { Model } from '../../src/graph/graph.js';
import type { OptimizeOptions } from '../../src/optimize/driver.js';
import type { Job, PipelineConfig } from '../../src/optimize/job.js';
import { releasePayloads, writeAndVerify } from '../../src/optimize/write-verify.js';
import { forEachTensor, loadModel } from '../../src/onnx/file.js';
import type { ModelProto } from '../../src/onnx/schema.js';
import { createSession, type Session } from '../../src/verify/session.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';
import { compareSessions, verifyModels, verifySequentially, type SessionOpener } from '../../src/verify/verify.js';
import { CLS, HELLO } from './models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-verify-mem-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const out = (v: number): Record<string, HostTensor> => ({ y: { type: 'float32', dims: [1, 2], data: new Float32Array([v, 1]) } });

interface FakeSpec {
  /** Input names (a differing one makes a signature mismatch). */
  input?: string;
  /** Feed index at which run() fails. */
  failAt?: number;
  /** Added to the output, to make the two models differ. */
  shift?: number;
}

/** Two stand-in sessions whose opens, runs and releases are logged in one list. */
function recording(specs: Record<'original' | 'optimized', FakeSpec>) {
  const log: string[] = [];
  const make = (which: 'original' | 'optimized'): Session => {
    const spec = specs[which];
    let k = 0;
    return {
      backend: 'node', label: which,
      inputs: [{ name: spec.input ?? 'x', isTensor: true, type: 'float32', shape: [1, 4] }],
      outputs: [{ name: 'y', isTensor: true, type: 'float32', shape: [1, 2] }],
      run: async (feeds: Feeds) => {
        const i = k++;
        log.push(`run ${which} ${i}`);
        if (i === spec.failAt) return err('verify-mismatch', `${which} failed on feed ${i}`);
        return ok(out(Number((feeds.x ?? feeds.z)!.data[0]) + (spec.shift ?? 0)));
      },
      prepare: () => ok(async () => {}),
      release: async () => { log.push(`release ${which}`); },
    };
  };
  const open: SessionOpener = async (which) => { log.push(`open ${which}`); return ok(make(which)); };
  return { log, open, make };
}

const feeds: Feeds[] = [0.5, 0.25, 0.125].map((v) => ({ x: { type: 'float32', dims: [1, 4], data: new Float32Array([v, 0, 0, 0]) } }));

describe('verification loads one model at a time', () => {
  it('releases the original before the optimized model is opened, and keeps only its outputs', async () => {
    const r = recording({ original: {}, optimized: { shift: 0.001 } });
    const v = await verifySequentially(r.open, { feeds, atol: Infinity, rtol: 0 });
    if (!v.ok) throw v.error;
    expect(r.log).toEqual([
      'open original', 'run original 0', 'run original 1', 'run original 2', 'release original',
      'open optimized', 'run optimized 0', 'run optimized 1', 'run optimized 2', 'release optimized',
    ]);
  });

  // Same verdicts as the interleaved comparison of two open sessions, failures included.
  const cases: [string, Record<'original' | 'optimized', FakeSpec>][] = [
    ['a passing pair', { original: {}, optimized: {} }],
    ['differing outputs', { original: {}, optimized: { shift: 0.5 } }],
    ['a signature mismatch (over a failing original)', { original: { failAt: 0 }, optimized: { input: 'z' } }],
    ['the optimized model failing first', { original: { failAt: 2 }, optimized: { failAt: 1 } }],
    ['the original failing first', { original: { failAt: 1 }, optimized: { failAt: 2 } }],
    ['both failing on the same feed', { original: { failAt: 1 }, optimized: { failAt: 1 } }],
  ];
  it.each(cases)('gives the interleaved verdict on %s', async (_name, specs) => {
    const opts = { feeds, minCosine: 0.999, atol: 1e-3, rtol: 0 };
    const seq = recording(specs);
    const a = await verifySequentially(seq.open, opts);
    const both = recording(specs);
    const b = await compareSessions(both.make('original'), both.make('optimized'), opts);
    expect(strip(a)).toEqual(strip(b));
    // The optimized model never runs past a feed the original failed on.
    const failAt = specs.original.failAt;
    if (failAt !== undefined) expect(seq.log).not.toContain(`run optimized ${failAt}`);
    // Both sessions are released, whatever the verdict.
    expect(seq.log.filter((l) => l.startsWith('release'))).toEqual(['release original', 'release optimized']);
  });

  it('reports a model that does not load, releasing what was opened', async () => {
    const log: string[] = [];
    const fake = recording({ original: {}, optimized: {} });
    const open: SessionOpener = async (which) => {
      log.push(`open ${which}`);
      if (which === 'optimized') return err('verify-mismatch', 'cannot load optimized');
      const s = fake.make(which);
      return ok({ ...s, release: async () => { log.push('release original'); } });
    };
    const v = await verifySequentially(open, { feeds });
    expect(v.ok ? 'ok' : v.error.message).toBe('cannot load optimized');
    expect(log).toEqual(['open original', 'release original', 'open optimized']);
  });

  it('on real models, gives exactly the figures of the comparison with both sessions open', async () => {
    const opts = { shapes: { x: [1, 3, 48, 192] }, runs: 2, seed: 3 };
    const seq = await verifyModels({ path: CLS }, { path: CLS }, opts);
    const a = await createSession({ path: CLS });
    const b = await createSession({ path: CLS });
    if (!a.ok || !b.ok) throw new Error('CLS does not load');
    try {
      const both = await compareSessions(a.value, b.value, opts);
      expect(strip(seq)).toEqual(strip(both));
      expect(seq.ok && seq.value.pass).toBe(true);
    } finally {
      await a.value.release();
      await b.value.release();
    }
  });
});

function strip(r: Result<unknown>): unknown {
  return r.ok ? r.value : { error: r.error.message, kind: r.error.kind };
}

function payloadBytes(m: ModelProto): number {
  let n = 0;
  forEachTensor(m, (t) => {
    for (const v of [t.rawData, t.floatData, t.int32Data, t.int64Data, t.doubleData, t.uint64Data]) n += v?.byteLength ?? 0;
  });
  return n;
}

describe("the rewritten model's payloads leave JS once OUT's files hold them", () => {
  it('releasePayloads empties every numeric payload, in place', () => {
    const m = loadModel(HELLO).model;
    const before = payloadBytes(m);
    expect(before).toBeGreaterThan(10_000);
    expect(releasePayloads(m)).toBe(before);
    expect(payloadBytes(m)).toBe(0);
  });

  it('writeAndVerify drops them before ORT loads a model, and OUT holds them all', async () => {
    const loaded = loadModel(HELLO);
    const inBytes = payloadBytes(loaded.model);
    const job: Job = { inPath: HELLO, loaded, model: new Model(loaded.model), opts: { seed: 0, method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0 } as OptimizeOptions, timings: {} };
    const seen: Record<string, number> = {};
    const cfg: PipelineConfig = {
      opts: job.opts, shapes: {}, values: {}, dataAware: false,
      verify: { enabled: true, minCosine: 0.999, threads: 1, latency: false, web: false },
      save: { force: false, externalData: false },
      onStage: (stage) => { seen[stage] = payloadBytes(job.loaded.model); },
    };
    const outPath = path.join(tmp, 'hello-copy.onnx');
    const written = await writeAndVerify(job, cfg, outPath);
    expect(written.pass).toBe(true);
    expect(seen.writing).toBe(inBytes);
    expect(seen['verifying in ONNX Runtime']).toBe(0);
    // Nothing was lost: OUT carries every payload the model had.
    expect(payloadBytes(loadModel(outPath).model)).toBe(inBytes);
    expect(written.verify?.pass).toBe(true);
  });
});
