/**
 * The singular-value spectra behind each rewritten layer's ranks, from the ORIGINAL
 * model's weights, for the HTML report: the matrix an SVD pair factors (with its rank),
 * the two channel unfoldings a Tucker-2 truncates (with r1 and r2), the same unfoldings
 * for CP (marked with the CP rank, which bounds both), the [S·kh, T·kw] reshape of a
 * spatial SVD (3-D: its two splits' unfoldings) and the n + 1 unfoldings of a TT of n
 * spatial axes. A grouped conv was fitted per group: its spectra are the first group's
 * kernel's, labelled so. Values only (no vectors), so one layer costs about
 * m·n·min(m, n) flops; a matrix past `maxWork` is left out with a note rather than
 * holding up the report.
 */
import { attrInt } from '../graph/attrs.js';
import type { Model } from '../graph/graph.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import { singularValues } from '../linalg/svd.js';
import { spatialSplitSpectra } from '../linalg/spatial-svd-3d.js';
import { ttNdSpectra } from '../linalg/tt-nd.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { readTensorFloat } from '../onnx/tensor.js';
import { unfoldS, unfoldT, type GroupKernel } from '../rewrite/conv-geometry.js';
import type { LayerRecord } from './records.js';

export interface Spectrum {
  /** What was decomposed, e.g. `output channels (mode T), 64 x 288`. */
  label: string;
  /** One or more spectra on one chart (a batched MatMul's slices); singular values, descending. */
  series: { label: string; sigma: number[] }[];
  /** The rank the rewrite kept on this spectrum, and what it is called. */
  rank?: number;
  rankLabel?: string;
}

export interface LayerSpectra {
  layer: string;
  method: string;
  spectra: Spectrum[];
  /** Why a layer has fewer spectra than its method has (too large, grouped, weight not found). */
  note?: string;
}

/** Default bound on one spectrum's work (m·n·min(m, n)): a 1024 x 2048 matrix is ~2e9. */
export const MAX_SPECTRUM_WORK = 4e9;

interface Mat { rows: number; cols: number; data: Float64Array }

const work = (m: { rows: number; cols: number }): number => m.rows * m.cols * Math.min(m.rows, m.cols);

/** The first group's kernel [d0/g, d1, K] of a conv-like weight [d0, d1, k…] (axis 0 split into g groups). */
function firstGroup(w: Float32Array, shape: readonly number[], group: number): GroupKernel {
  const k = shape.slice(2).reduce((a, b) => a * b, 1);
  const t = shape[0]! / group;
  const s = shape[1]!;
  return { t, s, k, data: Float64Array.from(w.subarray(0, t * s * k)) };
}

function groupOf(layer: LayerInfo): number {
  const g = attrInt(layer.node, 'group', 1);
  return Number.isInteger(g) && g >= 1 && layer.weightShape[0]! % g === 0 ? g : 1;
}

/** [S·kh, T·kw] with element ((s, y), (t, x)) = W[t, s, y, x]: the matrix a spatial SVD factors. */
function spatialReshape(w: Float32Array, [T, S, kh, kw]: readonly number[]): Mat {
  const rows = S! * kh!;
  const cols = T! * kw!;
  const data = new Float64Array(rows * cols);
  for (let t = 0; t < T!; t++) for (let s = 0; s < S!; s++) for (let y = 0; y < kh!; y++) for (let x = 0; x < kw!; x++) {
    data[(s * kh! + y) * cols + t * kw! + x] = w[((t * S! + s) * kh! + y) * kw! + x]!;
  }
  return { rows, cols, data };
}

interface Planned {
  label: string;
  /** The matrices to take singular values of (several: one series each on one chart). */
  mats: { label: string; m: Mat }[];
  /** Singular values computed already (TT's unfoldings). */
  sigma?: Float64Array;
  rank?: number;
  rankLabel?: string;
}

/** The matrices (with the rank each keeps) behind one rewritten layer, or why there are none. */
function plan(rec: LayerRecord, layer: LayerInfo, w: Float32Array, maxWork: number): Planned[] | string {
  const shape = layer.weightShape;
  const r = rec.ranks ?? [];
  const pass = rec.pass ?? rec.method ?? '';
  const one = (label: string, m: Mat, rank: number | undefined, rankLabel = 'rank'): Planned =>
    ({ label: `${label}, ${m.rows} x ${m.cols}`, mats: [{ label, m }], rank, rankLabel });
  if (pass === 'matmul-batched-svd') {
    const rows = shape[shape.length - 2]!;
    const cols = shape[shape.length - 1]!;
    const slices = w.length / (rows * cols);
    const count = Math.min(6, slices);
    const mats = Array.from({ length: count }, (_, b) => ({ label: `slice ${b}`, m: { rows, cols, data: Float64Array.from(w.subarray(b * rows * cols, (b + 1) * rows * cols)) } }));
    return [{ label: `each batch slice, ${rows} x ${cols}${count < slices ? ` (the first ${count} of ${slices})` : ''}`, mats, rank: r[0], rankLabel: 'rank' }];
  }
  if (pass === 'rnn-input-svd') {
    return [one('input weights of all gates and directions', { rows: shape[0]! * shape[1]!, cols: shape[2]!, data: Float64Array.from(w) }, r[0])];
  }
  if ((pass === 'conv-spatial-svd' || pass === 'conv-tt') && layer.op === 'Conv' && shape.length >= 3) return splitPlan(pass, layer, w, r, maxWork);
  if (shape.length >= 3 && (layer.op === 'Conv' || layer.op === 'ConvTranspose')) {
    const g = groupOf(layer);
    const gk = firstGroup(w, shape, g);
    const per = g > 1 ? ` (group 1 of ${g})` : '';
    if (gk.k === 1 || pass.endsWith('-svd')) {
      // A pointwise layer is one matrix: [out, in] for a Conv, [in, out] for a ConvTranspose.
      return [one(`channel matrix${per}`, { rows: gk.t, cols: gk.s * gk.k, data: gk.data }, r[0])];
    }
    // Axis 0 of a Conv weight is its output channels, of a ConvTranspose its input channels.
    const [outMat, inMat] = layer.op === 'Conv' ? [unfoldT(gk), unfoldS(gk)] : [unfoldS(gk), unfoldT(gk)];
    if (pass.endsWith('tucker2')) {
      return [one(`output channels (mode T)${per}`, outMat, r[1], 'r2'), one(`input channels (mode S)${per}`, inMat, r[0], 'r1')];
    }
    // CP's rank bounds the rank of every unfolding, so it is marked on both.
    const cp = pass.startsWith('conv-cp');
    return [
      one(`output channels (mode T)${per}`, outMat, cp ? r[0] : undefined, 'CP rank'),
      one(`input channels (mode S)${per}`, inMat, cp ? r[0] : undefined, 'CP rank'),
    ];
  }
  if (shape.length === 2) return [one('weight matrix', { rows: shape[0]!, cols: shape[1]!, data: Float64Array.from(w) }, r[0])];
  return `no spectrum for ${pass || 'this method'} on a ${shape.join('x')} weight`;
}

/**
 * The chains fitted per group along the spatial axes (conv-spatial-svd, conv-tt): group 1's
 * kernel [t, s, k…] and the matrices the fit truncates — spatial SVD 2-D: [s·kh, t·kw];
 * 3-D: [s·kd, kh·kw·t] (R1) and [s·kd·kh, kw·t] (R2); TT: [s·k1…k_i, k(i+1)…kn·t], i = 0…n.
 */
function splitPlan(pass: string, layer: LayerInfo, w: Float32Array, r: readonly number[], maxWork: number): Planned[] | string {
  const g = groupOf(layer);
  const [T, s, ...k] = layer.weightShape as number[];
  const t = T! / g;
  const K = k.reduce((a, b) => a * b, 1);
  const data = w.subarray(0, t * s! * K);
  const per = g > 1 ? ` (group 1 of ${g})` : '';
  const S = g > 1 ? 'S/g' : 'S';
  const Tn = g > 1 ? 'T/g' : 'T';
  const axes = k.length === 1 ? ['k'] : k.length === 2 ? ['kh', 'kw'] : k.length === 3 ? ['kd', 'kh', 'kw'] : k.map((_, i) => `k${i + 1}`);
  // Unfolding i: rows s·k1…k_i (its name), columns the rest.
  const dims = (i: number): { rows: number; cols: number; name: string } => {
    const rows = s! * k.slice(0, i).reduce((a, b) => a * b, 1);
    const name = `[${[S, ...axes.slice(0, i)].join('·')}, ${[...axes.slice(i), Tn].join('·')}]`;
    return { rows, cols: (s! * K * t) / rows, name };
  };
  if (pass === 'conv-spatial-svd') {
    if (k.length === 2) {
      const [kh, kw] = k as [number, number];
      return [{ label: `kernel as [${S}·kh, ${Tn}·kw]${per}, ${s! * kh} x ${t * kw}`, mats: [{ label: 'kernel', m: spatialReshape(data, [t, s!, kh, kw]) }], rank: r[0], rankLabel: 'rank' }];
    }
    if (k.length !== 3) return `no spectrum for a spatial SVD of ${k.length} spatial axes`;
    const splits = [dims(1), dims(2)];
    const big = splits.find((d) => work(d) > maxWork);
    if (big) return `too large to plot here (${big.rows} x ${big.cols})`;
    return spatialSplitSpectra({ data, shape: [t, s!, ...k] }).map((sp, i) => ({
      label: `split ${i + 1} of the kernel, ${splits[i]!.name}${per}, ${splits[i]!.rows} x ${splits[i]!.cols}`, mats: [], sigma: sp.sigma, rank: r[i], rankLabel: `R${i + 1}`,
    }));
  }
  const unfold = Array.from({ length: k.length + 1 }, (_, i) => dims(i));
  const big = unfold.find((d) => work(d) > maxWork);
  if (big) return `too large to plot here (${big.rows} x ${big.cols})`;
  return ttNdSpectra({ data, shape: [t, s!, ...k] }).map((sp, i) => ({
    label: `TT unfolding ${i + 1}, ${unfold[i]!.name}${per}, ${unfold[i]!.rows} x ${unfold[i]!.cols}`, mats: [], sigma: sp.sigma, rank: r[i], rankLabel: `R${i + 1}`,
  }));
}

/**
 * The spectra of every rewritten layer in `records`, read from `model` (the original).
 * A layer whose weight cannot be found, or whose matrices are past `maxWork`, gets a note.
 */
export function layerSpectra(
  model: Model, records: readonly LayerRecord[], opts: { external?: ExternalBytes; maxWork?: number } = {},
): LayerSpectra[] {
  const maxWork = opts.maxWork ?? MAX_SPECTRUM_WORK;
  const layers = findLayers(model);
  const out: LayerSpectra[] = [];
  for (const rec of records) {
    if (rec.skipped) continue;
    const method = rec.method ?? rec.pass ?? '';
    const layer = layers.find((l) => l.name === rec.name && l.op === rec.op);
    if (!layer) { out.push({ layer: rec.name, method, spectra: [], note: 'the layer was not found in the original model' }); continue; }
    let w: Float32Array;
    try {
      w = readTensorFloat(layer.weight.tensor, opts.external);
    } catch (e) {
      out.push({ layer: rec.name, method, spectra: [], note: `its weight could not be read: ${e instanceof Error ? e.message : String(e)}` });
      continue;
    }
    if (!w.every(Number.isFinite)) { out.push({ layer: rec.name, method, spectra: [], note: 'the weight has NaN or infinite values' }); continue; }
    const p = plan(rec, layer, w, maxWork);
    if (typeof p === 'string') { out.push({ layer: rec.name, method, spectra: [], note: p }); continue; }
    const spectra: Spectrum[] = [];
    const notes: string[] = [];
    for (const item of p) {
      if (item.sigma) { spectra.push({ label: item.label, series: [{ label: item.label, sigma: [...item.sigma] }], rank: item.rank, rankLabel: item.rankLabel }); continue; }
      const big = item.mats.find(({ m }) => work(m) > maxWork);
      if (big) { notes.push(`${item.label}: too large to plot here (${big.m.rows} x ${big.m.cols})`); continue; }
      spectra.push({
        label: item.label, rank: item.rank, rankLabel: item.rankLabel,
        series: item.mats.map(({ label, m }) => ({ label, sigma: [...singularValues(m)] })),
      });
    }
    out.push({ layer: rec.name, method, spectra, ...(notes.length > 0 && { note: notes.join('; ') }) });
  }
  return out;
}

/** The share of ‖W‖²_F the first `rank` singular values keep. */
export function energyKept(sigma: readonly number[], rank: number): number {
  let total = 0;
  let kept = 0;
  sigma.forEach((s, i) => { total += s * s; if (i < rank) kept += s * s; });
  return total > 0 ? kept / total : 1;
}
