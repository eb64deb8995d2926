/**
 * The singular-value spectra behind each rewritten layer's ranks, from the ORIGINAL
 * model's weights, for the HTML report: the matrix an SVD pair factors (with its rank),
 * the two channel unfoldings a Tucker-2 truncates (with r1 and r2), the same unfoldings
 * for CP (marked with the CP rank, which bounds both), the [S·kh, T·kw] reshape of a
 * spatial SVD and the three unfoldings of a TT. Values only (no vectors), so one layer
 * costs about m·n·min(m, n) flops; a matrix past `maxWork` is left out with a note rather
 * than holding up the report.
 */
import { attrInt } from '../graph/attrs.js';
import type { Model } from '../graph/graph.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import { singularValues } from '../linalg/svd.js';
import { ttSpectra } from '../linalg/tt.js';
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

const work = (m: Mat): number => m.rows * m.cols * Math.min(m.rows, m.cols);

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
  if (pass === 'conv-spatial-svd' && shape.length === 4) return [one('kernel as [S·kh, T·kw]', spatialReshape(w, shape), r[0])];
  if (pass === 'conv-tt' && shape.length === 4) {
    const [T, S] = shape as [number, number];
    if (w.length * Math.min(T, S) > maxWork) return `too large to plot here (${shape.join('x')})`;
    return ttSpectra({ data: w, shape: shape as [number, number, number, number] })
      .map((sp, i) => ({ label: `TT unfolding ${i + 1}`, mats: [], sigma: sp.sigma, rank: r[i], rankLabel: `R${i + 1}` }));
  }
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
