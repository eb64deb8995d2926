/**
 * The data-aware Tucker-2 fits of one conv layer at the rungs sensitivity tries (issue 18):
 * each rung fitted on its own, against the rungs of the layer sharing their rank-independent
 * work (`Tucker2Shared`, src/linalg/tucker2-conv.ts: the whitening, the whitened unfolding's
 * SVD, the patch moments' rank-independent products).
 * Not a test: `npm run bench:tucker2-rungs` (`-- --size=512`, `--rungs=N` (default 6),
 * `--rows=N` calibration patches (default 2048), `--repeats=N` (default 3), `--ort` for the
 * products in ORT as the real runs do (src/linalg/ort-gemm-sync.ts), `--phases` for the
 * split of a fit by phase (the cheapest and dearest rung), `--before=PATH` a module exporting `tucker2Conv` to
 * time as a third side, e.g. the file as it was before sharing; `--shared-only` times the
 * shared ladder alone, e.g. under --cpu-prof).
 *
 * The layer: a T=S=size 3x3 kernel with decaying channel spectra, and the channel and
 * patch moments of calibration inputs made of spatially smoothed noise mixed across
 * channels with a decaying spectrum (im2col rows, pad 1). The rungs are the ranks of
 * sensitivity's energy ladder on the kernel's unfoldings, spread as sensitivity keeps them.
 * Sides are timed interleaved, each ladder as a whole (a fresh shared state per ladder),
 * reported per rung and in total as the median of the repetitions (min–max).
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { product, runSync, type SyncGemm } from '../src/linalg/engine.js';
import { createSyncOrtGemm, type SyncOrtGemm } from '../src/linalg/ort-gemm-sync.js';
import { sliceCols, transpose, type Matrix } from '../src/linalg/matrix.js';
import { partialEnergyRank } from '../src/linalg/rank.js';
import { outputEnergy, refitLastFactorGiven } from '../src/linalg/refit.js';
import { leftVectorsByGram, singularValuesByGram } from '../src/linalg/svd.js';
import { createTucker2Shared, tucker2Conv, tucker2Error, type ConvKernel, type Tucker2Conv, type Tucker2ConvOptions } from '../src/linalg/tucker2-conv.js';
import { exactTruncation, whitenedFactorsAt, whitenedSvdWork } from '../src/linalg/whitened-svd.js';
import { createRng, type Rng } from '../src/util/rng.js';
import { describe, flag, interleaved, intOption, loadLine, timing, type Timing } from './bench-util.js';

const argv = process.argv.slice(2);
const TOOL = 'bench-tucker2-rungs';
const SIZE = intOption(argv, 'size', 256, TOOL);
const RUNGS = intOption(argv, 'rungs', 6, TOOL);
const ROWS = intOption(argv, 'rows', 2048, TOOL);
const REPEATS = intOption(argv, 'repeats', 3, TOOL);
const beforeArg = argv.find((a) => a.startsWith('--before='))?.slice('--before='.length);
/** sensitivity.ts's energy ladder. */
const LADDER = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999];
const WHITEN_DAMP = 0.03; // rewrite/svd-pair.ts

type Fit = (kernel: ConvKernel, ranks: readonly [number, number], opts?: Tucker2ConvOptions) => Tucker2Conv;

const K = 9;
const T = SIZE;
const S = SIZE;
const D = S * K;

function gaussian(rng: Rng, n: number): Float64Array {
  return Float64Array.from({ length: n }, () => rng.normal());
}

/** A [n, n] Gaussian matrix with its columns scaled by 1/(1 + i/τ): a decaying spectrum. */
function decaying(rng: Rng, n: number, tau: number): Matrix {
  const m = gaussian(rng, n * n);
  for (let i = 0; i < n; i++) for (let c = 0; c < n; c++) m[i * n + c]! *= 1 / (1 + c / tau);
  return { rows: n, cols: n, data: m };
}

/** The kernel [T, S, K]: Gaussian core mixed on both channel modes by decaying matrices. */
function makeKernel(rng: Rng, gemm: SyncGemm | undefined): Float32Array {
  const z: Matrix = { rows: T, cols: S * K, data: gaussian(rng, T * S * K) };
  const w1 = product(decaying(rng, T, 24), z, {}, gemm).data; // [T, S·K]
  // Mode S: [S, T·K] unfolding, mixed, folded back.
  const us = new Float64Array(S * T * K);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) us[s * T * K + t * K + k] = w1[(t * S + s) * K + k]!;
  const mixed = product(decaying(rng, S, 24), { rows: S, cols: T * K, data: us }, {}, gemm).data;
  const w = new Float32Array(T * S * K);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) w[(t * S + s) * K + k] = mixed[s * T * K + t * K + k]! / Math.sqrt(S * K);
  return w;
}

/** Channel Gram [S·S], patch Gram [D·D] and patch mean [D] of `rows` im2col patches of smoothed, channel-mixed noise. */
function makeStats(rng: Rng, gemm: SyncGemm | undefined): { channel: Float64Array; gram: Float64Array; mean: Float64Array } {
  const H = 32;
  const n = Math.max(1, Math.round(ROWS / (H * H)));
  const pix = n * H * H;
  // Spatially smoothed noise [pix, S] (3x3 box), then mixed across channels, plus a mean.
  const raw = gaussian(rng, pix * S);
  const smooth = new Float64Array(pix * S);
  for (let b = 0; b < n; b++) for (let y = 0; y < H; y++) for (let x = 0; x < H; x++) {
    const dst = ((b * H + y) * H + x) * S;
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
      const yy = y + dy, xx = x + dx;
      if (yy < 0 || yy >= H || xx < 0 || xx >= H) continue;
      const src = ((b * H + yy) * H + xx) * S;
      for (let c = 0; c < S; c++) smooth[dst + c] += raw[src + c]! / 9;
    }
  }
  const mixT = transpose(decaying(rng, S, 16));
  const x = product({ rows: pix, cols: S, data: smooth }, mixT, {}, gemm).data;
  for (let i = 0; i < pix; i++) for (let c = 0; c < S; c++) x[i * S + c] = Math.max(x[i * S + c]! + 0.3, 0); // ReLU-like inputs
  const channel = product({ rows: pix, cols: S, data: x }, { rows: pix, cols: S, data: x }, { transA: true }, gemm).data;
  // im2col, patch index c·K + k, pad 1.
  const p = new Float64Array(pix * D);
  for (let b = 0; b < n; b++) for (let y = 0; y < H; y++) for (let xx = 0; xx < H; xx++) {
    const row = ((b * H + y) * H + xx) * D;
    for (let ky = 0; ky < 3; ky++) for (let kx = 0; kx < 3; kx++) {
      const yy = y + ky - 1, xs = xx + kx - 1;
      if (yy < 0 || yy >= H || xs < 0 || xs >= H) continue;
      const src = ((b * H + yy) * H + xs) * S;
      for (let c = 0; c < S; c++) p[row + c * K + ky * 3 + kx] = x[src + c]!;
    }
  }
  const pm: Matrix = { rows: pix, cols: D, data: p };
  const gram = product(pm, pm, { transA: true }, gemm).data;
  const mean = new Float64Array(D);
  for (let i = 0; i < pix; i++) for (let d = 0; d < D; d++) mean[d] += p[i * D + d]! / pix;
  for (let i = 0; i < gram.length; i++) gram[i]! /= pix;
  for (let i = 0; i < channel.length; i++) channel[i]! /= pix;
  return { channel: Float64Array.from(channel), gram: Float64Array.from(gram), mean };
}

/** Sensitivity's rungs: energy ranks of the unfoldings on the ladder, deduplicated, spread to RUNGS. */
function rungsOf(w: Float32Array, gemm: SyncGemm | undefined): [number, number][] {
  const uS = new Float64Array(S * T * K);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) uS[s * T * K + t * K + k] = w[(t * S + s) * K + k]!;
  const sS = singularValuesByGram({ rows: S, cols: T * K, data: uS }, gemm);
  const sT = singularValuesByGram({ rows: T, cols: S * K, data: Float64Array.from(w) }, gemm);
  const total = (s: Float64Array): number => s.reduce((a, x) => a + x * x, 0);
  const list: [number, number][] = [];
  for (const e of LADDER) {
    let r1 = partialEnergyRank(sS, total(sS), e) ?? S;
    let r2 = partialEnergyRank(sT, total(sT), e) ?? T;
    r1 = Math.min(r1, r2 * K);
    r2 = Math.min(r2, r1 * K);
    if (!list.some((r) => r[0] === r1 && r[1] === r2)) list.push([r1, r2]);
  }
  if (list.length <= RUNGS) return list;
  return Array.from({ length: RUNGS }, (_, k) => list[Math.round((k * (list.length - 1)) / (RUNGS - 1))]!);
}

/**
 * One data-aware fit split by phase, mirroring tucker2-conv.ts's steps with the exported
 * pieces (seconds); "(shared)" marks the phases a layer's rungs share.
 */
function phases(kernel: ConvKernel, r1: number, r2: number, channel: Float64Array, gram: Float64Array, mean: Float64Array, gemm: SyncGemm | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  const at = <X>(name: string, f: () => X): X => {
    const t0 = performance.now();
    const v = f();
    out[name] = (out[name] ?? 0) + (performance.now() - t0) / 1000;
    return v;
  };
  const w = kernel.data;
  const work = at('whitening: unfolding, Cholesky, Lᵀ·W_S (shared)', () => {
    const d = new Float64Array(S * T * K);
    for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) d[s * T * K + t * K + k] = w[(t * S + s) * K + k]!;
    return whitenedSvdWork({ rows: S, cols: T * K, data: d }, { gram: channel, damp: WHITEN_DAMP }, gemm);
  });
  const sv = at(`SVD of the whitened unfolding (${exactTruncation(S, T * K, r1) ? 'exact: shared' : 'randomized'})`, () => whitenedFactorsAt(work, r1, gemm));
  const first = new Float32Array(r1 * S);
  for (let b = 0; b < r1; b++) for (let c = 0; c < S; c++) first[b * S + c] = sv.left[c * r1 + b]!;
  const qt = new Float64Array(T * r1 * K);
  for (let b = 0; b < r1; b++) for (let a = 0; a < T; a++) for (let k = 0; k < K; k++) qt[(a * r1 + b) * K + k] = sv.right[b * T * K + a * K + k]!;
  const q: Matrix = { rows: T, cols: r1 * K, data: qt };
  const ut = at('mode-T: Gram of Q_T and its SVD', () => runSync(leftVectorsByGram(q), gemm));
  const core = at('core U_Tᵀ·Q_T', () => Float32Array.from(product(sliceCols(ut, 0, r2), q, { transA: true }, gemm).data));
  const last = new Float32Array(T * r2);
  for (let a = 0; a < T; a++) for (let c = 0; c < r2; c++) last[a * r2 + c] = ut.data[a * ut.cols + c]!;
  const wm: Matrix = { rows: T, cols: D, data: Float64Array.from(w) };
  const den = at('refit: tr(W·Σ·Wᵀ) (shared)', () => outputEnergy(wm, gram, gemm));
  at('refit: Σ·Hᵀ, H·Σ·Hᵀ, W·Σ·Hᵀ, solve', () => {
    const h = new Float64Array(r2 * D);
    for (let i = 0; i < h.length; i++) h[i] = Math.sin(i); // the refit's cost does not depend on H's values
    return refitLastFactorGiven(wm, { rows: r2, cols: D, data: h }, gram, den, mean, gemm);
  });
  at('weight error', () => tucker2Error(kernel, first, core, last, r1, r2, gemm));
  return out;
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += a[i]! ** 2; }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

let ort: SyncOrtGemm | undefined;
try {
  ort = flag(argv, 'ort') ? await createSyncOrtGemm() : undefined;
  const gemm: SyncGemm | undefined = ort;
  const rng = createRng(SIZE);
  const t0 = performance.now();
  const w = makeKernel(rng, gemm);
  const st = makeStats(rng, gemm);
  const kernel: ConvKernel = { data: w, shape: [T, S, K], groups: 1 };
  const rungs = rungsOf(w, gemm);
  console.log(`Tucker-2 rungs of a ${T}x${S}x3x3 conv, ${ROWS} calibration patches (set-up ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  console.log(`products: ${ort ? ort.name : 'JS'}; load average ${loadLine()}; ${REPEATS} interleaved repetition(s), median (min–max) in seconds`);
  console.log(`rungs [r1, r2]: ${rungs.map((r) => `[${r.join(', ')}]`).join(' ')}`);
  const base: Tucker2ConvOptions = { gemm, channel: [{ gram: st.channel, damp: WHITEN_DAMP }], patches: { gram: [st.gram], mean: [st.mean] } };

  if (flag(argv, 'phases')) {
    for (const r of [rungs[0]!, rungs[rungs.length - 1]!]) {
      const ph = phases(kernel, r[0], r[1], st.channel, st.gram, st.mean, gemm);
      const total = Object.values(ph).reduce((a, b) => a + b, 0);
      console.log(`\nphases of one fit at [${r.join(', ')}] without shared work (total ${total.toFixed(2)} s):`);
      for (const [k, v] of Object.entries(ph)) console.log(`  ${k.padEnd(52)} ${v.toFixed(3).padStart(8)} s  ${((100 * v) / total).toFixed(0).padStart(3)}%`);
    }
  }

  const before: Fit | undefined = beforeArg ? ((await import(pathToFileURL(resolve(beforeArg)).href)) as { tucker2Conv: Fit }).tucker2Conv : undefined;
  interface Ladder { seconds: number[]; fits: Tucker2Conv[] }
  const ladder = (fit: Fit, shared: boolean): Ladder => {
    const sh = shared ? createTucker2Shared() : undefined;
    const seconds: number[] = [];
    const fits = rungs.map((r) => {
      const t = performance.now();
      const f = fit(kernel, r, { ...base, ...(sh && { shared: sh }) });
      seconds.push((performance.now() - t) / 1000);
      return f;
    });
    return { seconds, fits };
  };
  const sharedOnly = flag(argv, 'shared-only'); // for a CPU profile of the shared ladder alone
  const sides: { name: string; run: () => Ladder }[] = [
    ...(before && !sharedOnly ? [{ name: 'before', run: () => ladder(before, false) }] : []),
    ...(sharedOnly ? [] : [{ name: 'unshared', run: () => ladder(tucker2Conv, false) }]),
    { name: 'shared', run: () => ladder(tucker2Conv, true) },
  ];
  // Warm-up (JIT, ORT sessions): the cheapest rung once on each side.
  for (const s of sides) (s.name === 'shared' ? tucker2Conv : s.name === 'before' ? before! : tucker2Conv)(kernel, rungs[0]!, base);
  const perRung = sides.map(() => rungs.map(() => [] as number[]));
  const results = await interleaved(sides.map((s, i) => () => {
    const l = s.run();
    l.seconds.forEach((x, k) => perRung[i]![k]!.push(x));
    return l;
  }), REPEATS);
  console.log(`\nper rung (s):${''.padEnd(8)}${sides.map((s) => s.name.padStart(22)).join('')}`);
  rungs.forEach((r, k) => {
    console.log(`  [${r.join(', ')}]`.padEnd(21) + sides.map((_, i) => describe(timing(perRung[i]![k]!)).padStart(22)).join(''));
  });
  const totals: Timing[] = results.map((x) => x.timing);
  console.log('  ladder total'.padEnd(21) + totals.map((t) => describe(t).padStart(22)).join(''));
  const iu = sides.findIndex((s) => s.name === 'unshared');
  const is = sides.findIndex((s) => s.name === 'shared');
  if (iu < 0) process.exit(0);
  const ref = before ? 0 : iu;
  console.log(`\nshared vs ${sides[ref]!.name}: ladder ${(totals[is]!.median / totals[ref]!.median).toFixed(2)}x the time (${(100 * (1 - totals[is]!.median / totals[ref]!.median)).toFixed(0)}% saved)`);
  if (before) console.log(`unshared vs before: ${(totals[iu]!.median / totals[0]!.median).toFixed(2)}x the time`);
  console.log(`\nfits per rung: weight error / data error per side; largest relative difference of the factors, errors and bias correction from the shared fit's`);
  const diff = (a: Tucker2Conv, b: Tucker2Conv): number => Math.max(
    relDiff(a.first, b.first), relDiff(a.core, b.core), relDiff(a.last, b.last), relDiff(a.biasDelta ?? [], b.biasDelta ?? []),
    Math.abs(a.relError - b.relError) / a.relError, Math.abs((a.dataError ?? 0) - (b.dataError ?? 0)) / (a.dataError || 1));
  rungs.forEach((r, k) => {
    const fs = results.map((x) => x.last.fits[k]!);
    console.log(`  [${r.join(', ')}]`.padEnd(14) + fs.map((f, i) => `${sides[i]!.name} ${f.relError.toFixed(5)} / ${(f.dataError ?? NaN).toFixed(5)}`).join('   ')
      + fs.map((f, i) => (i === is ? '' : `   ${sides[i]!.name} ${diff(f, fs[is]!).toExponential(1)}`)).join(''));
  });
  console.log(`load average at the end ${loadLine()}`);
} finally {
  await ort?.dispose();
}
