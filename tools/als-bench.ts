/**
 * The setup bench:tucker2-als and bench:cp-als share: PP-OCRv4 det's convs with their
 * statistics from 4 seeded N(0,1) inputs at its input size, each in a pass context whose
 * anchored moments are the original model's own (x̂ = x: the anchored fit's code path on
 * them is the data-aware fit), and the quadratic objective a fit is scored on. Another seed
 * gives held-out statistics to score a fit on inputs it was not fitted to.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REAL_MODELS } from '../models/real.js';
import { loadCalibration } from '../src/calib/load.js';
import { collectStats } from '../src/calib/stats.js';
import { Model } from '../src/graph/graph.js';
import { findLayers, type LayerInfo } from '../src/graph/layers.js';
import { anchoredError, dampingOf, plusDiagonal, type AnchoredPatch } from '../src/linalg/anchored.js';
import { gemm } from '../src/linalg/gemm.js';
import type { Matrix } from '../src/linalg/matrix.js';
import { decodeModel } from '../src/onnx/codec.js';
import { ANCHOR_PATCH_DAMP } from '../src/rewrite/conv-stats.js';
import type { LayerInputStats, PassContext } from '../src/rewrite/pass.js';
import { createRng } from '../src/util/rng.js';
import { randomNpy } from './bench-data.js';

export interface BenchConv { layer: LayerInfo; cx: PassContext }

/** det's Conv layers that have patch statistics, each with its own pass context (inputs drawn with `seed`). */
export async function detConvsWithStats(tmpPrefix: string, seed = 5): Promise<BenchConv[]> {
  const model = new Model(decodeModel(new Uint8Array(readFileSync(REAL_MODELS.det.path))));
  const dims = [4, ...REAL_MODELS.det.shapes[0]!.split(':')[1]!.split('x').map(Number).slice(1)];
  const calib = loadCalibration(randomNpy(mkdtempSync(path.join(tmpdir(), tmpPrefix)), 'det.npy', dims, seed), {
    inputs: [{ name: 'x', isTensor: true, type: 'float32', shape: [1, ...dims.slice(1)] }],
  });
  if (!calib.ok) throw calib.error;
  const layers = findLayers(model);
  const st = await collectStats(model, layers, calib.value);
  if (!st.ok) throw st.error;
  const out: BenchConv[] = [];
  for (const layer of layers) {
    const s0 = st.value.stats.get(layer.name);
    if (layer.node.opType !== 'Conv' || !s0?.patchGram || !s0.mean) continue;
    const self: LayerInputStats = { ...s0, anchor: { gram: s0.gram, cross: s0.gram, mean: s0.mean, patchGram: s0.patchGram, patchCross: s0.patchGram, patchMean: s0.patchMean } };
    out.push({ layer, cx: { model, stats: new Map([[layer.name, self]]), rng: createRng(0), shared: new Map() } as PassContext });
  }
  return out;
}

/**
 * E‖W·p − Ŵ·p̂‖² over the patch moments, with the fits' damping: Ŵ·Ĉ·Ŵᵀ − 2·Ŵ·(W·X)ᵀ + const,
 * Ĉ = X̂ᵀX̂ + δI and X = X̂ᵀX + δI. `error` is the relative error (undamped).
 */
export interface PatchObjective { w: Matrix; cHat: Matrix; wx: Matrix; error: (wHat: Matrix) => number }

export function patchObjective(weight: Float32Array, T: number, D: number, patch: AnchoredPatch): PatchObjective {
  const w: Matrix = { rows: T, cols: D, data: Float64Array.from(weight) };
  const delta = dampingOf(patch.gramHat, D, ANCHOR_PATCH_DAMP);
  const cHat: Matrix = { rows: D, cols: D, data: plusDiagonal(patch.gramHat, D, delta) };
  const wx = gemm(w, { rows: D, cols: D, data: plusDiagonal(patch.cross, D, delta) }, { transB: true });
  const error = (wHat: Matrix): number => {
    const e = anchoredError(w, wHat, patch);
    return Math.sqrt(e.num / e.den);
  };
  return { w, cHat, wx, error };
}

