/** Runs two in-memory models in ORT on the same seeded inputs and reports the relative L2 error. */
import * as ort from 'onnxruntime-node';
import { createRng } from '../../src/util/rng.js';

export async function runModel(bytes: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  try {
    const out = await s.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await s.release();
  }
}

export function randomFeed(dims: number[], seed = 1): ort.Tensor {
  const rng = createRng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  return new ort.Tensor('float32', Float32Array.from({ length: n }, () => rng.normal()), dims);
}

export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i] - b[i]) ** 2; den += a[i] ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** Max relative L2 over all outputs of two models on the same feeds. */
export async function compareModels(a: Uint8Array, b: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<number> {
  const ya = await runModel(a, feeds);
  const yb = await runModel(b, feeds);
  let worst = 0;
  for (const k of Object.keys(ya)) {
    expectSameLength(ya[k], yb[k], k);
    worst = Math.max(worst, relL2(ya[k], yb[k]));
  }
  return worst;
}

function expectSameLength(a: ArrayLike<number>, b: ArrayLike<number> | undefined, k: string): void {
  if (!b || a.length !== b.length) throw new Error(`output ${k}: shapes differ`);
}

/** A seeded matrix of exact rank r: A [m, r] · B [r, n]. */
export function lowRank(m: number, n: number, r: number, seed: number): Float32Array {
  const rng = createRng(seed);
  const a = Float64Array.from({ length: m * r }, () => rng.normal());
  const b = Float64Array.from({ length: r * n }, () => rng.normal());
  const w = new Float32Array(m * n);
  for (let i = 0; i < m; i++) for (let k = 0; k < r; k++) {
    const x = a[i * r + k];
    for (let j = 0; j < n; j++) w[i * n + j] += x * b[k * n + j];
  }
  return w;
}
