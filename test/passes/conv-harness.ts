/**
 * Test harness for the Conv passes: synthetic one-Conv models with exactly low-rank
 * kernels, running a pass without the driver, and comparing both models in ORT.
 */
import * as ort from 'onnxruntime-node';
import { ModelBuilder, type AttrValue } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers, type LayerInfo } from '../../src/graph/layers.js';
import { orthonormalize } from '../../src/linalg/qr.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import type { ModelProto } from '../../src/onnx/schema.js';
import { isSkip, type Applied, type LayerPass, type PassContext, type Skip } from '../../src/rewrite/pass.js';
import { createRng, type Rng } from '../../src/util/rng.js';

export interface ConvSpec {
  /** Input channels, output channels, group. */
  S: number;
  T: number;
  group?: number;
  kernel: number[];
  strides?: number[];
  pads?: number[];
  dilations?: number[];
  autoPad?: 'NOTSET' | 'SAME_UPPER' | 'SAME_LOWER' | 'VALID';
  bias?: boolean;
  /** Write the kernel_shape attribute. */
  kernelShapeAttr?: boolean;
  /** Spatial extent of the input (per axis). */
  size: number[];
}

export const randn = (rng: Rng, n: number): Float32Array => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal();
  return a;
};

/** Attributes of the Conv under test. */
export function convAttrs(spec: ConvSpec): Record<string, AttrValue> {
  const a: Record<string, AttrValue> = {};
  if (spec.kernelShapeAttr) a.kernel_shape = spec.kernel;
  if (spec.strides) a.strides = spec.strides;
  if (spec.pads) a.pads = spec.pads;
  if (spec.dilations) a.dilations = spec.dilations;
  if (spec.autoPad && spec.autoPad !== 'NOTSET') a.auto_pad = spec.autoPad;
  if ((spec.group ?? 1) !== 1) a.group = spec.group!;
  return a;
}

/** A model `y = Conv(x, W, b)` with the given weight data ([T, S/g, k…]). */
export function convModel(spec: ConvSpec, weight: Float32Array, rng: Rng): Uint8Array {
  const g = spec.group ?? 1;
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, spec.S, ...spec.size]);
  const w = b.init('w', [spec.T, spec.S / g, ...spec.kernel], weight);
  const inputs = [x, w];
  if (spec.bias) inputs.push(b.init('b', [spec.T], randn(rng, spec.T)));
  const y = b.node('Conv', inputs, convAttrs(spec), { name: 'conv' });
  b.output(y);
  return encodeModel(b.build());
}

export function context(model: Model, seed = 0): PassContext {
  return { model, rng: createRng(seed), shared: new Map() };
}

export function convLayer(model: Model): LayerInfo {
  const layers = findLayers(model).filter((l) => l.op === 'Conv');
  if (layers.length !== 1) throw new Error(`expected one Conv layer, found ${layers.length}`);
  return layers[0];
}

/** Match only (for Skip checks). */
export function matchOnly<M>(bytes: Uint8Array, pass: LayerPass<M>): { m: M | Skip; model: Model; cx: PassContext } {
  const model = new Model(decodeModel(bytes));
  const cx = context(model);
  return { m: pass.match(convLayer(model), cx), model, cx };
}

/** Runs match + apply at the given ranks (with `stats`: data-aware), returning the rewritten bytes. */
export function rewrite<M>(
  bytes: Uint8Array, pass: LayerPass<M>, ranks: number[], stats?: PassContext['stats'],
): { bytes: Uint8Array; applied: Applied; match: M; proto: ModelProto } {
  const model = new Model(decodeModel(bytes));
  const cx = { ...context(model), ...(stats && { stats }) };
  const m = pass.match(convLayer(model), cx);
  if (isSkip(m)) throw new Error(`match skipped: ${m.skip}`);
  const applied = pass.apply(m, ranks, cx);
  if (isSkip(applied)) throw new Error(`apply skipped: ${applied.skip}`);
  model.root.removeUnusedInitializers();
  return { bytes: encodeModel(model.proto), applied, match: m, proto: model.proto };
}

export function opCounts(proto: ModelProto): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of proto.graph!.node) out[n.opType ?? ''] = (out[n.opType ?? ''] ?? 0) + 1;
  return out;
}

export interface OrtOut { data: Float32Array; dims: readonly number[] }

/** Runs a model on one float input, returning its first output. */
export async function runOrt(bytes: Uint8Array, feeds: Record<string, { data: Float32Array; dims: number[] }>): Promise<OrtOut> {
  const sess = await ort.InferenceSession.create(bytes, {
    graphOptimizationLevel: 'disabled', intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential',
  });
  try {
    const f: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) f[k] = new ort.Tensor('float32', v.data, v.dims);
    const out = await sess.run(f);
    const y = out[sess.outputNames[0]];
    return { data: Float32Array.from(y.data as Float32Array), dims: [...y.dims] };
  } finally {
    await sess.release();
  }
}

export function relL2(ref: Float32Array, got: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = ref[i] - got[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Runs original and rewritten models on the same seeded input; returns both outputs. */
export async function compareInOrt(original: Uint8Array, rewritten: Uint8Array, spec: ConvSpec, seed: number): Promise<{ a: OrtOut; b: OrtOut; rel: number }> {
  const dims = [1, spec.S, ...spec.size];
  const data = randn(createRng(seed + 1000), dims.reduce((p, q) => p * q, 1));
  const a = await runOrt(original, { x: { data, dims } });
  const b = await runOrt(rewritten, { x: { data, dims } });
  return { a, b, rel: relL2(a.data, b.data) };
}

// ---- exactly low-rank kernels --------------------------------------------------------

/** W_j = G_j ×_T U_T ×_S U_S per group: multilinear channel ranks ≤ (r1, r2). */
export function tuckerKernel(rng: Rng, T: number, S: number, group: number, K: number, r1: number, r2: number): Float32Array {
  const t = T / group;
  const s = S / group;
  const w = new Float32Array(T * s * K);
  for (let j = 0; j < group; j++) {
    const uT = randn(rng, t * r2);
    const uS = randn(rng, s * r1);
    const core = randn(rng, r2 * r1 * K);
    for (let a = 0; a < t; a++) {
      for (let c = 0; c < s; c++) {
        for (let k = 0; k < K; k++) {
          let v = 0;
          for (let p = 0; p < r2; p++) for (let q = 0; q < r1; q++) v += uT[a * r2 + p] * core[(p * r1 + q) * K + k] * uS[c * r1 + q];
          w[((j * t + a) * s + c) * K + k] = v;
        }
      }
    }
  }
  return w;
}

/**
 * W[t, s, k] = Σ_r λ_r A[t, r] B[s, r] C[k, r], λ_r ∈ [1, 3]. Factor columns are
 * orthonormalised when R fits the mode: well-separated components, where ALS from an SVD
 * start converges reliably (random columns at these tiny sizes are often nearly
 * collinear, the "swamp" where plain ALS stalls — a property of ALS, not of the wiring
 * these tests check).
 */
export function cpKernel(rng: Rng, T: number, S: number, K: number, R: number): Float32Array {
  const factor = (n: number): Float64Array => {
    const m = { rows: n, cols: R, data: Float64Array.from(randn(rng, n * R)) };
    return R <= n ? Float64Array.from(orthonormalize(m).data) : m.data;
  };
  const A = factor(T);
  const B = factor(S);
  const C = factor(K);
  const lambda = Array.from({ length: R }, () => 1 + 2 * rng.next());
  const w = new Float32Array(T * S * K);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) {
    let v = 0;
    for (let r = 0; r < R; r++) v += lambda[r] * A[t * R + r] * B[s * R + r] * C[k * R + r];
    w[(t * S + s) * K + k] = v;
  }
  return w;
}

/** A [T, S] matrix of rank r. */
export function lowRankMatrix(rng: Rng, T: number, S: number, r: number): Float32Array {
  const L = randn(rng, T * r);
  const R = randn(rng, r * S);
  const w = new Float32Array(T * S);
  for (let i = 0; i < T; i++) for (let j = 0; j < S; j++) {
    let v = 0;
    for (let k = 0; k < r; k++) v += L[i * r + k] * R[k * S + j];
    w[i * S + j] = v;
  }
  return w;
}

// ---- geometry combinations ------------------------------------------------------------

export type PadMode = 'none' | 'sym' | 'asym' | 'SAME_UPPER' | 'SAME_LOWER' | 'VALID';

/** Builds a spec's window attributes for `spatial` axes; the input is large enough for the window. */
export function windowSpec(spatial: number, k: number, stride: number, dilation: number, pad: PadMode): Pick<ConvSpec, 'kernel' | 'strides' | 'dilations' | 'pads' | 'autoPad' | 'size'> {
  const kernel = new Array<number>(spatial).fill(k);
  const eff = (k - 1) * dilation + 1;
  // Vary the extent per axis (odd/even, non-square) so padding asymmetries show.
  const size = Array.from({ length: spatial }, (_, i) => eff + 2 + i + (spatial === 3 ? 0 : 3));
  const out: ReturnType<typeof windowSpec> = { kernel, size };
  if (stride !== 1) out.strides = new Array<number>(spatial).fill(stride);
  if (dilation !== 1) out.dilations = new Array<number>(spatial).fill(dilation);
  switch (pad) {
    case 'none': break;
    case 'sym': out.pads = [...new Array<number>(spatial).fill(Math.floor(eff / 2)), ...new Array<number>(spatial).fill(Math.floor(eff / 2))]; break;
    case 'asym': out.pads = [...Array.from({ length: spatial }, (_, i) => i % 2), ...Array.from({ length: spatial }, (_, i) => 2 - (i % 2))]; break;
    default: out.autoPad = pad;
  }
  return out;
}

export const describe1 = (spec: ConvSpec): string =>
  `${spec.kernel.length}D k${spec.kernel.join('x')} S${spec.S} T${spec.T} g${spec.group ?? 1} s[${spec.strides ?? ''}] d[${spec.dilations ?? ''}] p[${spec.pads ?? ''}] ${spec.autoPad ?? ''} bias=${!!spec.bias}`;

/** Every padding mode the property tests draw from. */
export const PADS: PadMode[] = ['none', 'sym', 'asym', 'SAME_UPPER', 'SAME_LOWER', 'VALID'];
/** ORT 1.30 refuses dilations with auto_pad SAME_* ("Dilation not supported"), even for the original model. */
export const ortRuns = (c: { dilation: number; pad: PadMode }): boolean => !(c.dilation > 1 && c.pad.startsWith('SAME'));
