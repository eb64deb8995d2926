import { describe, expect, it } from 'vitest';
import { convCp } from '../../passes/conv-cp.js';
import { convCp4, CP4_SLOW_PATH } from '../../passes/conv-cp4.js';
import { convTt, TT_SLOW_PATH } from '../../passes/conv-tt.js';
import { convTucker2 } from '../../passes/conv-tucker2.js';
import { Model } from '../../src/graph/graph.js';
import { orthonormalize } from '../../src/linalg/qr.js';
import { decodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { COMPARE_WORK, rankAtCost } from '../../src/rewrite/challenge.js';
import { convSpatialSvd } from '../../passes/conv-spatial-svd.js';
import { optionsOf } from '../../src/api/config.js';
import { isSkip, type BoundPass, type PassContext } from '../../src/rewrite/pass.js';
import { bind } from '../../src/rewrite/registry.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { context, convLayer, convModel, randn, windowSpec } from './conv-harness.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli } from '../helpers/cli.js';
import type { Report } from '../../src/report/report.js';

/** W[t, s, y, x] = Σ C[s, a]·Y[a, y, b]·X[b, x, c]·Tf[c, t]: TT ranks (R1, R2, R3), Tucker-2 channel ranks (R1, R3). */
function ttKernel(rng: Rng, T: number, S: number, kh: number, kw: number, [R1, R2, R3]: [number, number, number]): Float32Array {
  const [C, Y, X, Tf] = [randn(rng, S * R1), randn(rng, R1 * kh * R2), randn(rng, R2 * kw * R3), randn(rng, R3 * T)];
  const w = new Float32Array(T * S * kh * kw);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
    let v = 0;
    for (let a = 0; a < R1; a++) for (let b = 0; b < R2; b++) for (let c = 0; c < R3; c++) v += C[s * R1 + a]! * Y[(a * kh + y) * R2 + b]! * X[(b * kw + x) * R3 + c]! * Tf[c * T + t]!;
    w[((t * S + s) * kh + y) * kw + x] = v;
  }
  return w;
}

/** W[t, s, y, x] = Σ_r λ_r A[t, r]·B[s, r]·Y[y, r]·X[x, r] with orthonormal factor columns (R ≤ kh, kw). */
function cp4Kernel(rng: Rng, T: number, S: number, kh: number, kw: number, R: number): Float32Array {
  const f = (n: number) => Float64Array.from(orthonormalize({ rows: n, cols: R, data: Float64Array.from(randn(rng, n * R)) }).data);
  const [A, B, Y, X] = [f(T), f(S), f(kh), f(kw)];
  const w = new Float32Array(T * S * kh * kw);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
    let v = 0;
    for (let r = 0; r < R; r++) v += (1 + r) * A[t * R + r]! * B[s * R + r]! * Y[y * R + r]! * X[x * R + r]!;
    w[((t * S + s) * kh + y) * kw + x] = v;
  }
  return w;
}

function setup(w: Float32Array, S: number, T: number): { model: Model; cx: PassContext; layer: ReturnType<typeof convLayer>; bytes: Uint8Array } {
  const rng = createRng(0);
  const bytes = convModel({ S, T, ...windowSpec(2, 3, 1, 1, 'sym') }, w, rng);
  const model = new Model(decodeModel(bytes));
  return { model, cx: context(model), layer: convLayer(model), bytes };
}

function bound<M>(pass: Parameters<typeof bind>[0], layer: ReturnType<typeof convLayer>, cx: PassContext): BoundPass {
  const b = bind(pass, layer, cx);
  if (isSkip(b)) throw new Error(b.skip);
  return b as BoundPass & { _m?: M };
}

describe('auto: TT and CP-4 challenge the choice so far at equal cost', () => {
  it('a kernel of low TT rank: Tucker-2 at its exact ranks [8, 8] loses to TT [8, 8, 8] (fewer params and MACs, same error) when the run saves params; where latency counts TT must do better than equal, and its win says it is timed', () => {
    const [S, T] = [32, 32];
    const { bytes, layer, cx } = setup(ttKernel(createRng(1), T, S, 3, 3, [8, 8, 8]), S, T);
    const tucker = bound(convTucker2, layer, cx);
    expect(tucker.chooseRanks({ kind: 'energy', energy: 0.999 })).toEqual([8, 8]);
    const c = convTt.challenge!(layer, tucker, [8, 8], { ...cx, saves: 'params' });
    // Tucker-2 [8, 8]: 32·8 + 8·8·9 + 8·32 = 1088; TT [8, 8, 8]: 32·8 + 8·8·3 + 8·8·3 + 8·32 = 896.
    expect(c?.use?.bound.name).toBe('conv-tt');
    expect(c?.use?.ranks).toEqual([8, 8, 8]);
    expect(c!.use!.bound.cost([8, 8, 8]).after.params).toBe(896);
    expect(c?.note).toMatch(/^tucker2 8,8 err \S+ vs tt (\d+),\1,\1 err \S+; tt 8,8,8 err \S+, the smallest within it$/);
    const applied = c!.use!.bound.apply([8, 8, 8], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(applied.relError).toBeLessThan(1e-5);
    // Where latency counts (the default) an equal error is not enough: TT's chains measured
    // slower (TT_SLOW_PATH), so Tucker-2 stays and the note says why.
    const lat = convTt.challenge!(layer, tucker, [8, 8], { ...cx, saves: 'latency' });
    expect(lat?.use).toBeUndefined();
    expect(lat?.note).toMatch(new RegExp(`^tucker2 8,8 err \\S+ vs tt (\\d+),\\1,\\1 err \\S+ \\(equal: tt's chains ${TT_SLOW_PATH.replace(/[()]/g, '\\$&')}, so tucker2 stays where latency counts\\)$`));
    // Against Tucker-2 [7, 8] (not exact: the kernel's first rank is 8) the exact TT wins, and its
    // note says the latency screen times it against Tucker-2.
    const better = convTt.challenge!(layer, tucker, [7, 8], { ...cx, saves: 'latency' });
    expect(better?.use?.bound.name).toBe('conv-tt');
    expect(better?.note).toMatch(/^tucker2 7,8 err \S+ vs tt 8,8,8 err \S+/);
    expect(better?.note?.endsWith(`; tt timed against tucker2 in ORT, as its chains ${TT_SLOW_PATH}`)).toBe(true);
    expect(c?.note).not.toContain('timed');
    const [rec] = optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0 });
    expect(rec!.note).toMatch(/ vs tt \d+,\d+,\d+ err \S+ \(equal: /);
    expect(rec!.note).not.toMatch(/not compared/);
  });

  it('TT competes along [k, k, k]: the largest k whose chain is no larger and no costlier than the choice so far', () => {
    const [S, T] = [24, 16];
    const { layer, cx } = setup(randn(createRng(2), T * S * 9), S, T);
    const m = convTt.match(layer, cx);
    if (isSkip(m)) throw new Error(m.skip);
    const tucker = bound(convTucker2, layer, cx);
    const limit = tucker.cost([10, 8]).after;
    const ranksOf = (k: number) => [Math.min(k, 24), Math.min(k, 48), Math.min(k, 16)];
    const k = rankAtCost({ pass: convTt, match: m, limit: 48, patchDim: S * 9, ranksOf }, limit);
    const at = (x: number) => convTt.cost(m, ranksOf(x)).after;
    expect(at(k).params).toBeLessThanOrEqual(limit.params);
    expect(at(k).macsPerPosition).toBeLessThanOrEqual(limit.macsPerPosition);
    expect(at(k + 1).params > limit.params || at(k + 1).macsPerPosition > limit.macsPerPosition).toBe(true);
    // --rank N: TT competes at N, N, N as --method tt writes it.
    const c = convTt.challenge!(layer, tucker, [6, 6], { ...cx, saves: 'params' }, { kind: 'fixed', rank: 6 });
    expect(c?.note).toMatch(/^tucker2 6,6 err \S+ vs tt 6,6,6 err \S+$/);
  });

  it('CP-4 beats the CP chosen so far at equal cost on a 4-way CP kernel when the run saves params or MACs; where latency counts, at equal error CP stays', () => {
    const [S, T, R] = [16, 16, 3];
    const { layer, cx } = setup(cp4Kernel(createRng(3), T, S, 3, 3, R), S, T);
    const cp = bound(convCp, layer, cx);
    // CP rank 3: 3·(16 + 16 + 9) = 123 params; CP-4 at that size: rank ⌊123 / 38⌋ = 3, exact.
    for (const saves of ['params', 'macs'] as const) {
      const c = convCp4.challenge!(layer, cp, [R], { ...cx, saves });
      expect(c?.note).toMatch(/^cp 3 err \S+ vs cp4 3 err \S+$/);
      expect(c?.use?.bound.name).toBe('conv-cp4');
      expect(c?.use?.ranks).toEqual([3]);
    }
    for (const saves of ['latency', undefined] as const) {
      const c = convCp4.challenge!(layer, cp, [R], { ...cx, ...(saves && { saves }) });
      expect(c?.use).toBeUndefined();
      expect(c?.note).toBe(`${c?.note.split(' (')[0]} (equal: cp4's chains ${CP4_SLOW_PATH}, so cp stays where latency counts)`);
    }
  });

  it('end to end under auto (latency counts by default): on a 4-way CP kernel every method is compared; CP wins, CP-4 only equals it, so CP stays', () => {
    const [S, T, R] = [16, 16, 3];
    const { bytes } = setup(cp4Kernel(createRng(3), T, S, 3, 3, R), S, T);
    const contenders = new Map();
    const [rec] = optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0 }, undefined, { contenders });
    expect(rec!.note).toMatch(/^tucker2 3,3 err \S+ vs cp \d+ err \S+; cp 3 err \S+, the smallest within it; /);
    expect(rec!.note).toMatch(/; cp 3 err \S+ vs tt \d+,\d+,\d+ err /);
    expect(rec!.note).toContain(`vs cp4 3 err `);
    expect(rec!.note).toContain(`(equal: cp4's chains ${CP4_SLOW_PATH}, so cp stays where latency counts)`);
    expect(rec!.note).not.toMatch(/not compared/);
    expect(rec).toMatchObject({ pass: 'conv-cp', ranks: [3] });
    expect(contenders.get(rec!.name)).toEqual([{ pass: 'conv-tucker2', ranks: [3, 3] }]);
  });

  it('through the CLI, a default run (latency counts): TT and CP-4 are compared (not skipped for their measured slow path)', async () => {
    const [S, T] = [32, 32];
    const { bytes } = setup(ttKernel(createRng(1), T, S, 3, 3, [8, 8, 8]), S, T);
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-all-methods-'));
    const input = path.join(dir, 'in.onnx');
    writeFileSync(input, bytes);
    const r = await runCli('optimize', input, path.join(dir, 'out.onnx'), '--method', 'auto', '--min-params', '0', '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    const note = rep.layers[0]!.note ?? '';
    expect(note).toMatch(/(^|; )tucker2 8,8 err \S+ vs tt \d+,\d+,\d+ err /);
    expect(note).toMatch(/ vs cp4 \d+ err /);
    expect(note).not.toMatch(/not compared/);
    expect(rep.verify!.pass).toBe(true);
  }, 120_000);
});

describe('auto: a fit made only to compare methods costs at most COMPARE_WORK flops (fitWork), or --compare-limit', () => {
  it('on a 512x512x3x3 conv, at the size of Tucker-2 [256, 256], spatial SVD and TT are compared and CP and CP-4 are not (their ALS: minutes); on 64x64x3x3 every method is; work grows with the rank', () => {
    const at = (C: number) => {
      const { layer, cx } = setup(randn(createRng(5), C * C * 9), C, C);
      const tucker = bound(convTucker2, layer, cx);
      const limit = tucker.cost([C / 2, C / 2]).after;
      const work = (pass: Parameters<typeof bind>[0]): [number, number] => {
        const b = bound(pass, layer, cx);
        const m = (pass as typeof convCp).match(layer, cx);
        if (isSkip(m)) throw new Error(m.skip);
        // The largest single rank whose chain is within Tucker-2's cost (TT: [k, k, k]).
        const spec = { pass: pass as typeof convCp, match: m, limit: C * 3, patchDim: C * 9, ...(pass === convTt && { ranksOf: (k: number) => [k, k, k] }) };
        const k = rankAtCost(spec, limit);
        const ranks = pass === convTt ? [k, k, k] : [k];
        return [b.fitWork(ranks), b.fitWork(ranks.map((r) => Math.max(1, r >> 1)))];
      };
      return { layer, cx, tucker, w: { svd: work(convSpatialSvd), tt: work(convTt), cp: work(convCp), cp4: work(convCp4) } };
    };
    const big = at(512);
    expect(big.w.svd[0]).toBeLessThanOrEqual(COMPARE_WORK);
    expect(big.w.tt[0]).toBeLessThanOrEqual(COMPARE_WORK);
    expect(big.w.cp[0]).toBeGreaterThan(COMPARE_WORK);
    expect(big.w.cp4[0]).toBeGreaterThan(COMPARE_WORK);
    for (const [hi, lo] of Object.values(big.w)) expect(lo).toBeLessThan(hi);
    // Not fitted: the note says what the fit would cost and how to have it anyway.
    const c = convCp.challenge!(big.layer, big.tucker, [256, 256], big.cx);
    expect(c?.use).toBeUndefined();
    expect(c?.note).toMatch(/^cp \d+ not compared \(its fit, ~\d\.\de\+1[1-9] flops, is past the 5e\+10 a comparison may spend: --compare-limit raises it\)$/);
    const small = at(64);
    for (const [w] of Object.values(small.w)) expect(w).toBeLessThan(COMPARE_WORK / 10);
  });

  it('PassContext.compareWork bounds them (a small limit: "not compared"), a large one fits them; the driver passes it on, --compare-limit sets it', async () => {
    const [S, T] = [24, 24];
    const { bytes, layer, cx } = setup(ttKernel(createRng(1), T, S, 3, 3, [6, 6, 6]), S, T);
    const tucker = bound(convTucker2, layer, cx);
    const low = convTt.challenge!(layer, tucker, [6, 6], { ...cx, saves: 'params', compareWork: 1e3 });
    expect(low?.note).toMatch(/^tt 6,6,6 not compared \(its fit, ~\S+ flops, is past the 1e\+3 a comparison may spend: --compare-limit raises it\)$/);
    expect(low?.use).toBeUndefined();
    for (const compareWork of [undefined, 1e15]) {
      const c = convTt.challenge!(layer, tucker, [6, 6], { ...cx, saves: 'params', ...(compareWork && { compareWork }) });
      expect(c?.note).toMatch(/^tucker2 6,6 err \S+ vs tt \d+,\d+,\d+ err /);
      expect(c?.use?.bound.name).toBe('conv-tt');
    }
    const run = (compareWork?: number) => optimizeModel(new Model(decodeModel(bytes)), undefined, {
      method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0, saves: 'params', ...(compareWork && { compareWork }),
    })[0]!;
    expect(run(1e3).note).toMatch(/tt \S+ not compared \(its fit/);
    expect(run(1e3).pass).toBe('conv-tucker2');
    expect(run().note).not.toMatch(/not compared/);
    expect(run().pass).toBe('conv-tt');
    expect(optionsOf({ compareLimit: 1e12 }, undefined).compareWork).toBe(1e12);
    expect(optionsOf({ allMethods: true }, undefined).compareWork).toBeUndefined();
    expect(() => optionsOf({ compareLimit: -1 }, undefined)).toThrow(/--compare-limit expects a number in \[0, inf\], got "-1"/);
    // Through the CLI: the note in the report, and the rewrite still verified.
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-compare-limit-'));
    const input = path.join(dir, 'in.onnx');
    writeFileSync(input, bytes);
    const r = await runCli('optimize', input, path.join(dir, 'out.onnx'), '--min-params', '0', '--save', 'params', '--compare-limit', '1000', '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers[0]!.note).toMatch(/tt \S+ not compared \(its fit, ~\S+ flops, is past the 1e\+3 a comparison may spend: --compare-limit raises it\)/);
    expect(rep.layers[0]!.pass).toBe('conv-tucker2');
    expect(rep.verify!.pass).toBe(true);
    const bad = await runCli('optimize', input, path.join(dir, 'bad.onnx'), '--compare-limit', 'lots');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--compare-limit/);
  });
});
