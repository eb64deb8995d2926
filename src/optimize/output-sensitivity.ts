/**
 * How much the judged outputs move per unit of each output channel of a layer
 * (--output-aware). A layer's fit minimises its own output error; an error the rest of the
 * model ignores (a channel a Hardswish clips, one the next layer barely reads) costs as much
 * there as one it amplifies. Weighting each output channel c by
 *   h_c = Σ_p ‖∂y/∂z_{p,c}‖²   (p over the channel's positions, y the judged outputs)
 * makes the fit spend its rank where the outputs are sensitive (SVD pairs:
 * linalg/whitened-svd.ts outputScale, √(h/mean h + floor) as row-weights.ts).
 *
 * Estimated first from backward runs (output-gradients.ts: one run serves every layer whose
 * downstream operators all have a vector-Jacobian product), else measured by finite
 * differences in ORT: z_c += ε·s with s a Rademacher sign per position,
 * h_c = Σ_o ‖y_o(z + ε·s·e_c) − y_o(z)‖² / (ε²·‖y_o(z)‖²), averaged over feeds. Over s the
 * cross terms between positions vanish in expectation (Hutchinson), and where each
 * position reaches outputs of its own (a pointwise linear tail) they are zero, so h_c is
 * then exact. Outputs count relative to their size, as their rel. L2 is judged.
 * One probe per channel and feed, each a run of the part downstream of the layer
 * (submodel.ts) fed with tensors captured from a run of the original: bounded by a work
 * budget (multiply-adds of the runs, backward ones included), not by time.
 */
import { attrInt } from '../graph/attrs.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import type { Model } from '../graph/graph.js';
import { encodeModel } from '../onnx/codec.js';
import type { NodeProto } from '../onnx/schema.js';
import { createRng, type Rng } from '../util/rng.js';
import { createSession } from '../verify/session.js';
import type { Feeds, HostTensor } from '../verify/tensor.js';
import { gradientSensitivity } from './output-gradients.js';
import { runAll } from './output-error.js';
import { captureModel, downstreamOf, subModel, type Downstream } from './submodel.js';

/** Default bound on the probes' multiply-adds (about 10 minutes of 2-core CPU time at ~3 GMAC/s). */
export const OUTPUT_SENSITIVITY_MACS = 2e12;
/** Perturbation size relative to the layer output's RMS: small enough to stay linear, large enough above float32 rounding. */
const EPS = 1e-2;
/** Calibration feeds probed at most (each adds a probe per channel). */
const MAX_FEEDS = 2;

export interface OutputSensitivityOptions {
  /** The outputs judged (--outputs); default every graph output. */
  outputs?: readonly string[];
  threads?: number;
  /** Work bound in multiply-adds of the probes' runs (OUTPUT_SENSITIVITY_MACS). */
  maxMacs?: number;
  seed?: number;
  /**
   * 'auto' (default): gradients where every downstream operator has a product, finite
   * differences for the rest; 'gradients': the rest unweighted; 'probes': finite differences only.
   */
  method?: 'auto' | 'gradients' | 'probes';
  onProgress?: (done: number, total: number, what: string) => void;
}

export interface OutputSensitivity {
  /** Layer name → h per output channel. */
  sensitivity: Map<string, Float64Array>;
  notes: string[];
}

/**
 * The axis of a layer's output that holds the channels its weight's outputs make: Conv's
 * 1; MatMul X·W the last, W·X the second last; Gemm's N (weight as B) or M (weight as A).
 * Undefined for layers no SVD pair takes.
 */
export function outputChannelAxis(layer: Pick<LayerInfo, 'op' | 'weightInput' | 'weightShape'>): number | undefined {
  if (layer.op === 'Conv') return 1;
  if (layer.op === 'MatMul' && layer.weightShape.length === 2) return layer.weightInput === 1 ? -1 : -2;
  if (layer.op === 'Gemm') return layer.weightInput === 1 ? 1 : 0;
  return undefined;
}

/** A layer an SVD pair may take (the fits that use output weights): a 1x1 ungrouped Conv, a Gemm, a 2-D MatMul. */
export function isSvdPairLayer(layer: Pick<LayerInfo, 'op' | 'weightShape' | 'node'>): boolean {
  if (layer.op === 'Conv') return layer.weightShape.slice(2).every((k) => k === 1) && attrInt(layer.node, 'group', 1) === 1;
  return layer.op === 'Gemm' || (layer.op === 'MatMul' && layer.weightShape.length === 2);
}

interface Probe { layer: LayerInfo; axis: number; part: Downstream; channels: number; macs: number }

/** Multiply-adds of the weighted layers in a downstream part (the other operators are cheap next to them). */
function partMacs(part: Downstream, byNode: ReadonlyMap<NodeProto, LayerInfo>): number {
  let m = 0;
  for (const n of part.nodes) m += byNode.get(n)?.macs ?? 0;
  return m;
}

/** How many times the learned shapes' elements a feed holds (a batch of samples in one feed), at least 1. */
export function feedScale(feed: Feeds, shapes: ReadonlyMap<string, readonly number[]> | undefined): number {
  let fed = 0;
  let learned = 0;
  for (const [name, t] of Object.entries(feed)) {
    const dims = shapes?.get(name);
    if (!dims) continue;
    fed += t.data.length;
    learned += dims.reduce((a, b) => a * b, 1);
  }
  return learned > 0 ? Math.max(1, fed / learned) : 1;
}

/** Σ_o ‖a_o − b_o‖² / ‖b_o‖² over the judged outputs (absolute where b_o is zero). */
function relativeMove(a: Record<string, HostTensor>, b: Record<string, HostTensor>, outputs: readonly string[]): number {
  let total = 0;
  for (const o of outputs) {
    const x = a[o]?.data;
    const y = b[o]?.data;
    if (!x || !y || x.length !== y.length) continue;
    let num = 0;
    let den = 0;
    for (let i = 0; i < y.length; i++) {
      const d = Number(x[i]) - Number(y[i]);
      num += d * d;
      den += Number(y[i]) ** 2;
    }
    total += den > 0 ? num / den : num;
  }
  return total;
}

/**
 * h per output channel of each main-graph layer of `layers` that an SVD pair takes, from
 * the first calibration feeds. Layers without a channel axis, inside subgraphs, with a
 * non-float32 output or beyond the work bound are left out, with a note.
 */
export async function measureOutputSensitivity(
  model: Model, shapes: ReadonlyMap<string, readonly number[]> | undefined, layers: readonly LayerInfo[], feeds: readonly Feeds[], opts: OutputSensitivityOptions = {},
): Promise<OutputSensitivity> {
  const notes: string[] = [];
  const sensitivity = new Map<string, Float64Array>();
  const g = model.root;
  // Every weighted layer prices the runs, not only the ones probed.
  const all = findLayers(model, shapes as Map<string, number[]> | undefined).filter((l) => l.graph === g);
  const byNode = new Map(all.map((l) => [l.node, l]));
  for (const l of layers) byNode.set(l.node, l);
  const judged = opts.outputs ?? g.proto.output.map((o) => o.name ?? '');
  const budget = opts.maxMacs ?? OUTPUT_SENSITIVITY_MACS;
  const scale = feeds.length > 0 ? feedScale(feeds[0]!, shapes) : 1;
  const candidates: { layer: LayerInfo; axis: number; judgedOutput: boolean; part: Downstream }[] = [];
  let other = 0;
  for (const layer of layers) {
    const axis = outputChannelAxis(layer);
    const z = layer.node.output[0];
    if (axis === undefined || layer.graph !== g || !z) { other++; continue; }
    const part = downstreamOf(g, layer.node);
    const judgedOutput = judged.includes(z);
    if (!judgedOutput && !part.outputs.some((o) => judged.includes(o))) continue;
    candidates.push({ layer, axis, judgedOutput, part });
  }
  if (other > 0) notes.push(`output weights: ${other} layer(s) not probed (inside subgraphs, or not a Conv, Gemm or 2-D MatMul)`);
  if (candidates.length === 0 || feeds.length === 0) return { sensitivity, notes };
  let spent = 0;
  const method = opts.method ?? 'auto';
  if (method !== 'probes') {
    // A backward run costs about twice the forward one: three forward runs in all.
    const runCost = 3 * Math.max(1, [...byNode.values()].reduce((a, l) => a + (l.graph === g ? l.macs ?? 0 : 0), 0)) * scale;
    const gs = await gradientSensitivity(model, candidates.map((c) => ({ name: c.layer.name, value: c.layer.node.output[0]!, axis: c.axis })), feeds, judged, {
      threads: opts.threads, seed: opts.seed, maxFeeds: MAX_FEEDS, runCost, maxMacs: budget, onProgress: opts.onProgress,
    });
    for (const [name, h] of gs.sensitivity) sensitivity.set(name, h);
    spent += gs.runs * runCost;
    if (gs.sensitivity.size > 0) notes.push(`output weights: sensitivities of ${gs.sensitivity.size} layer(s) from gradients (${gs.runs} backward run(s) on ${gs.feeds} calibration feed(s))`);
    const left = candidates.filter((c) => !gs.sensitivity.has(c.layer.name));
    if (left.length > 0) {
      const why = gs.failure ?? gs.uncovered.get(left[0]!.layer.name) ?? 'no gradient reaches them';
      if (method === 'gradients') {
        notes.push(`output weights: ${left.length} layer(s) without an exact gradient fitted unweighted (${why}; --output-aware measures them by finite differences)`);
        return { sensitivity, notes };
      }
      notes.push(`output weights: ${left.length} layer(s) without an exact gradient, measured by finite differences (${why})`);
    }
  }
  const probes: Probe[] = [];
  let graphOutputs = 0;
  for (const c of candidates) {
    if (sensitivity.has(c.layer.name)) continue;
    // An output that is itself judged moves it equally on every channel: even weights, nothing to measure.
    if (c.judgedOutput || g.proto.output.some((o) => o.name === c.layer.node.output[0])) { graphOutputs++; continue; }
    const dims = shapes?.get(c.layer.node.output[0]!);
    // For the work bound; the probes count the channels the captured output has.
    const channels = dims?.at(c.axis) ?? (c.layer.op === 'Conv' ? c.layer.weightShape[0]! : Math.max(...c.layer.weightShape));
    probes.push({ layer: c.layer, axis: c.axis, part: c.part, channels, macs: partMacs(c.part, byNode) });
  }
  if (graphOutputs > 0) notes.push(`output weights: ${graphOutputs} layer(s) whose output is a graph output weighted evenly`);
  if (probes.length === 0) return { sensitivity, notes };
  // The work bound: fewer feeds first, then the layers with the costliest probes left out.
  // Layer MACs are at the learned shapes; a feed holding a batch of several samples costs more.
  const cost = (p: Probe): number => p.channels * Math.max(p.macs, 1) * scale;
  let nFeeds = Math.min(MAX_FEEDS, feeds.length);
  while (nFeeds > 1 && spent + probes.reduce((a, p) => a + nFeeds * cost(p), 0) > budget) nFeeds--;
  const affordable = new Set<Probe>();
  for (const p of [...probes].sort((a, b) => cost(a) - cost(b))) {
    if (spent + nFeeds * cost(p) > budget) break;
    spent += nFeeds * cost(p);
    affordable.add(p);
  }
  const dropped = probes.length - affordable.size;
  if (dropped > 0) notes.push(`output weights: ${dropped} layer(s) with the costliest probes not probed (beyond the work bound of ${budget.toExponential(1)} multiply-adds)`);
  const use = feeds.slice(0, nFeeds);
  const run = probes.filter((p) => affordable.has(p));
  if (run.length === 0) return { sensitivity, notes };
  const rng = createRng(opts.seed ?? 0);
  const before = new Set(g.proto.node);
  const totalProbes = run.reduce((a, p) => a + p.channels * use.length, 0);
  let done = 0;
  const failed: string[] = [];
  for (const p of run) {
    // A run of the original exposing this part's boundary and the layer's output (one
    // layer's at a time: on large inputs all of them at once could exhaust memory).
    const cap = await runAll({ bytes: encodeModel(captureModel(model.proto, [...p.part.boundary, p.layer.node.output[0]!])) }, use, opts.threads ?? 1);
    if (!cap.ok) { failed.push(`${p.layer.name} (${cap.error.message})`); continue; }
    let k = 0;
    const h = await probeLayer(model, p, before, use, cap.value, judged, rng, opts.threads ?? 1, () => {
      k++;
      opts.onProgress?.(done + k, totalProbes, 'output sensitivity probe');
    });
    done += k;
    if (typeof h === 'string') failed.push(`${p.layer.name} (${h})`);
    else sensitivity.set(p.layer.name, h);
  }
  if (failed.length > 0) notes.push(`output weights: not probed: ${failed.join(', ')}`);
  notes.push(`output weights: sensitivities of ${run.length - failed.length} layer(s) measured by finite differences (${done} probe runs on ${use.length} calibration feed(s))`);
  return { sensitivity, notes };
}

/** One layer's h from its downstream part; a string says why it could not be measured. */
async function probeLayer(
  model: Model, p: Probe, before: ReadonlySet<NodeProto>, feeds: readonly Feeds[], captured: readonly Record<string, HostTensor>[],
  judged: readonly string[], rng: Rng, threads: number, progress: () => void,
): Promise<Float64Array | string> {
  const z = p.layer.node.output[0]!;
  const sm = subModel(model.proto, model.root, p.part, before, feeds, captured);
  if (typeof sm === 'string') return sm;
  const outputs = p.part.outputs.filter((o) => judged.includes(o));
  const s = await createSession({ bytes: encodeModel(sm.model) }, { intraOpNumThreads: threads, spinning: false });
  if (!s.ok) return s.error.message;
  try {
    let h: Float64Array | undefined;
    for (const f of sm.feeds) {
      const z0 = f[z];
      if (!z0 || z0.type !== 'float32') return `its output is ${z0?.type ?? 'missing'}, not float32`;
      const dims = z0.dims;
      const axis = p.axis < 0 ? dims.length + p.axis : p.axis;
      const t = dims[axis];
      if (t === undefined || (h && h.length !== t)) return `its output has no channel axis ${p.axis} of one size`;
      h ??= new Float64Array(t);
      const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
      const data = z0.data as Float32Array;
      let ss = 0;
      for (const v of data) ss += v * v;
      const eps = EPS * (ss > 0 ? Math.sqrt(ss / data.length) : 1);
      const base = await s.value.run(f, outputs);
      if (!base.ok) return base.error.message;
      for (let c = 0; c < t; c++) {
        const moved = Float32Array.from(data);
        for (let i = c * inner; i < moved.length; i += t * inner) {
          for (let j = i; j < i + inner; j++) moved[j] += rng.next() < 0.5 ? eps : -eps;
        }
        const r = await s.value.run({ ...f, [z]: { type: 'float32', dims, data: moved } }, outputs);
        if (!r.ok) return r.error.message;
        h[c] += relativeMove(r.value, base.value, outputs) / (eps * eps) / feeds.length;
        progress();
      }
    }
    if (!h || !h.every(Number.isFinite)) return 'non-finite outputs';
    return h;
  } finally {
    await s.value.release();
  }
}
