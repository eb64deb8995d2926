/**
 * Per-layer sensitivity: the output error of the whole model (on calibration inputs)
 * when only one layer is compressed, at a ladder of candidate ranks. Each candidate is
 * applied to the live model, run in ORT, and rolled back (Graph.checkpoint/rollback), so
 * factorization caches on the match are reused.
 *
 * For a main-graph layer only the part of the model downstream of it is run, fed with
 * tensors captured once from one run of the original (submodel.ts); the outputs it does
 * not reach are the original's. That is the same computation as running the whole
 * rewritten model, in a smaller session. Layers inside subgraphs, and any part that
 * cannot be cut out, run the whole model.
 */
import { err, ok, type Result } from '../errors.js';
import type { Graph, Model } from '../graph/graph.js';
import type { LayerInfo } from '../graph/layers.js';
import { encodeModel } from '../onnx/codec.js';
import { isSkip, type BoundPass, type LayerRewrite, type PassContext } from '../rewrite/pass.js';
import { bind } from '../rewrite/registry.js';
import type { Candidate, LayerSensitivity } from '../report/records.js';
import type { RankPolicy } from '../rewrite/rank-policy.js';
import { rankMultiple } from '../linalg/rank.js';
import { createSession, type ModelSource } from '../verify/session.js';
import type { Feeds, HostTensor } from '../verify/tensor.js';
import { toNumbers } from '../verify/tensor.js';
import { top1Agreement } from '../verify/compare.js';
import { passFor, type MethodChoice } from '../../passes/index.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { timeRewrite } from './layer-latency.js';
import { captureModel, downstreamOf, subModel, type Downstream } from './submodel.js';
import type { NodeProto } from '../onnx/schema.js';

export type { Candidate, LayerSensitivity };



/** The energy ladder the candidates come from (ranks deduplicated, only those that pay). */
export const LADDER = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999];

/** Float data is read as it is; other types are widened (int64 and half need converting). */
const asNumbers = (t: HostTensor): ArrayLike<number> => (t.type === 'float32' || t.type === 'float64' ? (t.data as Float32Array | Float64Array) : toNumbers(t));

/** acc + Σ(a−b)², a non-finite difference counting as infinite; float32 pairs get a monomorphic loop. */
function addSquaredDiff(acc: number, a: HostTensor, b: HostTensor | undefined): number {
  if (a.type === 'float32' && b?.type === 'float32') {
    const x = a.data as Float32Array;
    const y = b.data as Float32Array;
    for (let i = 0; i < x.length; i++) {
      const d = x[i]! - y[i]!;
      acc += Number.isFinite(d) ? d * d : Infinity;
    }
    return acc;
  }
  const x = asNumbers(a);
  const y: ArrayLike<number> = b ? asNumbers(b) : [];
  for (let i = 0; i < x.length; i++) {
    const d = x[i]! - y[i]!;
    acc += Number.isFinite(d) ? d * d : Infinity;
  }
  return acc;
}

/** Σ‖y_o‖² per reference output o, over all feeds (the denominators of outputErr2). */
function referenceEnergy(ref: readonly Record<string, HostTensor>[]): Map<string, number> {
  const den = new Map<string, number>();
  for (const r of ref) {
    for (const [name, t] of Object.entries(r)) {
      const a = asNumbers(t);
      let e = den.get(name) ?? 0;
      for (let i = 0; i < a.length; i++) e += a[i]! * a[i]!;
      den.set(name, e);
    }
  }
  return den;
}

/** Σ‖Δy_o‖² per output of `got` against the reference, summed in the same order as ever (bit-for-bit stable). */
function diffEnergy(ref: readonly Record<string, HostTensor>[], got: readonly Record<string, HostTensor>[]): Map<string, number> {
  const num = new Map<string, number>();
  ref.forEach((r, k) => {
    for (const [name, t] of Object.entries(r)) num.set(name, addSquaredDiff(num.get(name) ?? 0, t, got[k]?.[name]));
  });
  return num;
}

const err2Ratio = (num: number, den: number): number => (den === 0 ? (num === 0 ? 0 : Infinity) : num / den);

/**
 * The worst output's squared relative error, max over o of Σ‖Δy_o‖² / Σ‖y_o‖². Each
 * output counts on its own, as verification checks each: pooled, one large-valued output
 * hid the others' errors (ISNet's mask came out at rel. L2 0.32 while the pool read 0.11).
 */
function worstErr2(num: ReadonlyMap<string, number>, den: ReadonlyMap<string, number>): number {
  let worst = 0;
  for (const [name, d] of den) worst = Math.max(worst, err2Ratio(num.get(name) ?? 0, d));
  return worst;
}

/** Only the named outputs of each feed's results (all of them when `names` is undefined). */
export function pickOutputs(outs: Record<string, HostTensor>[], names: readonly string[] | undefined): Record<string, HostTensor>[] {
  return names ? outs.map((o) => Object.fromEntries(names.map((n) => [n, o[n]!]))) : outs;
}

/** Squared relative error of `got` against the reference: the worst output's, over all feeds. */
export function outputErr2(ref: readonly Record<string, HostTensor>[], got: readonly Record<string, HostTensor>[]): number {
  return worstErr2(diffEnergy(ref, got), referenceEnergy(ref));
}

/**
 * Top-1 agreement over the last axis: every output whose last dim is above 1 is read as
 * rows of class scores; the worst output's share of rows whose argmax agrees, over all
 * feeds. Undefined when no output has such an axis.
 */
export function top1OverLastAxis(ref: readonly Record<string, HostTensor>[], got: readonly Record<string, HostTensor>[]): number | undefined {
  let worst: number | undefined;
  for (const name of Object.keys(ref[0] ?? {})) {
    let rows = 0;
    let agree = 0;
    ref.forEach((r, k) => {
      const t = r[name]!;
      const cols = t.dims[t.dims.length - 1] ?? 1;
      if (cols < 2) return;
      const n = t.dims.reduce((a, d) => a * d, 1) / cols;
      rows += n;
      agree += top1Agreement(toNumbers(t), toNumbers(got[k]![name]!), n, cols) * n;
    });
    if (rows > 0) worst = Math.min(worst ?? 1, agree / rows);
  }
  return worst;
}

/** Runs a model on every feed. Graph optimizations are off: session creation dominates trials. */
export async function runAll(src: ModelSource, feeds: readonly Feeds[]): Promise<Result<Record<string, HostTensor>[]>> {
  const s = await createSession(src, { graphOptimizationLevel: 'disabled' });
  if (!s.ok) return s;
  try {
    const outs: Record<string, HostTensor>[] = [];
    for (const f of feeds) {
      const r = await s.value.run(f);
      if (!r.ok) return r;
      outs.push(r.value);
    }
    return ok(outs);
  } finally {
    await s.value.release();
  }
}

type Outputs = Record<string, HostTensor>[];

/** Applies one rewrite, runs it (`run` sees the graph rewritten), and restores the graph exactly. */
async function trial(g: Graph, pass: BoundPass, ranks: number[], cx: PassContext, run: (before: ReadonlySet<NodeProto>) => Promise<Result<Outputs>>):
  Promise<Result<{ outs: Outputs; relError: number }>> {
  const cp = g.checkpoint();
  const shared = new Map(cx.shared);
  try {
    const applied = pass.apply(ranks, cx);
    if (isSkip(applied)) return err('rank', applied.skip);
    const outs = await run(new Set(cp.nodes));
    return outs.ok ? ok({ outs: outs.value, relError: applied.relError }) : outs;
  } finally {
    g.rollback(cp);
    cx.shared.clear();
    for (const [k, v] of shared) cx.shared.set(k, v);
  }
}

/** Tensors of one run of the original: each main-graph layer's downstream part and what it reads. */
interface Capture {
  parts: ReadonlyMap<NodeProto, Downstream>;
  /** Per feed: the graph outputs and every boundary tensor. */
  values: Outputs;
}

/** One run of the original exposing what every listed main-graph layer's part needs; undefined when it fails. */
async function capture(model: Model, layers: readonly LayerInfo[], feeds: readonly Feeds[]): Promise<Capture | undefined> {
  const parts = new Map<NodeProto, Downstream>();
  for (const l of layers) if (l.graph === model.root) parts.set(l.node, downstreamOf(l.graph, l.node));
  if (parts.size === 0) return undefined;
  const extra = [...parts.values()].flatMap((p) => p.boundary);
  const r = await runAll({ bytes: encodeModel(captureModel(model.proto, extra)) }, feeds);
  return r.ok ? { parts, values: r.value } : undefined;
}

/**
 * The rewritten model's outputs: its downstream part run on the captured tensors, the
 * other outputs as captured; the whole model when the part cannot be cut out or run.
 */
async function runRewritten(model: Model, layer: LayerInfo, before: ReadonlySet<NodeProto>, feeds: readonly Feeds[], cap: Capture | undefined): Promise<Result<Outputs>> {
  const part = cap?.parts.get(layer.node);
  if (cap && part) {
    const sm = subModel(model.proto, layer.graph, part, before, feeds, cap.values);
    if (typeof sm !== 'string') {
      const r = await runAll({ bytes: encodeModel(sm.model) }, sm.feeds);
      if (r.ok) return ok(cap.values.map((base, k) => ({ ...base, ...r.value[k] })));
    }
  }
  return runAll({ bytes: encodeModel(model.proto) }, feeds);
}

export interface SensitivityOptions {
  method: MethodChoice;
  align?: number;
  feeds: readonly Feeds[];
  reference: readonly Record<string, HostTensor>[];
  cx: PassContext;
  /** Candidate ranks per layer at most (spread over the ladder). */
  maxCandidates?: number;
  /**
   * Layers below this share of the model's parameters and of its MACs are not measured
   * (each trial is an ORT session: the small layers would cost most of the time and
   * save little).
   */
  minShare?: number;
  totals?: { params: number; macs?: number };
  /** Time each candidate as a one-layer model and keep only those measured faster. */
  latency?: { threads: number; shapes: ShapeMap; external?: ExternalBytes };
  onProgress?: (done: number, total: number, layer: string) => void;
  /** Run every trial on the whole model (the reference method: same results, slower). */
  wholeModel?: boolean;
  /** The pass for a layer; default the one `method` picks (another rewrite can be measured the same way). */
  passFor?: (layer: LayerInfo) => LayerRewrite<unknown> | string;
}

/** The pass for a layer, or why the layer is not measured (cheap checks only: no factorization). */
function passOrReason(layer: LayerInfo, opts: SensitivityOptions): LayerRewrite<unknown> | string {
  const pass = opts.passFor ? opts.passFor(layer) : passFor(layer, opts.method);
  if (typeof pass === 'string') return pass;
  const share = opts.minShare ?? 0;
  if (share > 0 && opts.totals) {
    const pShare = layer.params / Math.max(opts.totals.params, 1);
    const mShare = layer.macs !== undefined && opts.totals.macs ? layer.macs / opts.totals.macs : pShare;
    if (pShare < share && mShare < share) return `below ${(share * 100).toFixed(1)}% of the model's params and MACs: not measured`;
  }
  return pass;
}

export async function measureSensitivity(model: Model, layers: readonly LayerInfo[], opts: SensitivityOptions): Promise<LayerSensitivity[]> {
  const out: LayerSensitivity[] = [];
  // The reference does not change between trials: its energy is summed once.
  const refEnergy = referenceEnergy(opts.reference);
  const cap = opts.wholeModel ? undefined : await capture(model, layers.filter((l) => typeof passOrReason(l, opts) !== 'string'), opts.feeds);
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    opts.onProgress?.(i, layers.length, layer.name);
    const chosen = passOrReason(layer, opts);
    const entry: LayerSensitivity = { name: layer.name, op: layer.op, before: { params: layer.params, macsPerPosition: layer.params }, macs: layer.macs, candidates: [] };
    const multiple = rankMultiple(opts.align);
    if (multiple) entry.align = multiple;
    out.push(entry);
    if (typeof chosen === 'string') { entry.reason = chosen; continue; }
    let pass: BoundPass;
    try {
      const b = bind(chosen, layer, opts.cx);
      if (isSkip(b)) { entry.reason = b.skip; continue; }
      pass = b;
    } catch (e) {
      entry.reason = (e as Error).message;
      continue;
    }
    const seen = new Set<string>();
    const ranksList: number[][] = [];
    for (const e of LADDER) {
      const policy: RankPolicy = { kind: 'energy', energy: e, ...(opts.align ? { align: opts.align } : {}) };
      let r;
      try { r = pass.chooseRanks(policy); } catch { continue; }
      if (isSkip(r) || seen.has(r.join(','))) continue;
      const c = pass.cost(r);
      entry.before = c.before;
      if (!pass.pays(c)) continue;
      seen.add(r.join(','));
      ranksList.push(r);
    }
    const max = opts.maxCandidates ?? 4;
    // Keep the cheapest, the most accurate and an even spread between.
    const pickList = ranksList.length <= max ? ranksList : Array.from({ length: max }, (_, k) => ranksList[Math.round((k * (ranksList.length - 1)) / (max - 1))]);
    let slower = 0;
    // Ranks measured slower than the layer: a candidate at least as large in every rank
    // has more MACs in every conv or product of its chain, so it is not factorized to find out.
    const slowRanks: number[][] = [];
    const aboveSlow = (r: readonly number[]): boolean => slowRanks.some((s) => s.every((v, k) => r[k]! >= v));
    for (const ranks of pickList) {
      if (opts.latency && aboveSlow(ranks)) { slower++; continue; }
      // One event per candidate: a large layer's trials can take minutes.
      opts.onProgress?.(i, layers.length, `${layer.name} at rank ${ranks.join('x')}`);
      let ms: number | undefined;
      let isSlower = false;
      const t = await trial(layer.graph, pass, ranks, opts.cx, async (before) => {
        if (opts.latency) {
          // The chain is timed as the trial wrote it, before the (costlier) model run.
          const chain = layer.graph.proto.node.filter((n) => !before.has(n));
          const lt = await timeRewrite(model, layer, chain, opts.latency.shapes, { threads: opts.latency.threads, external: opts.latency.external });
          if (lt.ok) {
            entry.ms = entry.ms === undefined ? lt.value.originalMs : Math.min(entry.ms, lt.value.originalMs);
            ms = lt.value.candidateMs;
            // Keep a rewrite only when ORT runs it faster than the layer it replaces.
            if (ms >= lt.value.originalMs) { isSlower = true; return err('rank', 'measured slower'); }
          }
        }
        return runRewritten(model, layer, before, opts.feeds, cap);
      });
      if (isSlower) { slower++; slowRanks.push(ranks); }
      if (!t.ok) continue;
      entry.candidates.push({ pass: pass.name, ranks, after: pass.cost(ranks).after, relError: t.value.relError, outErr2: worstErr2(diffEnergy(opts.reference, t.value.outs), refEnergy), ms });
    }
    if (entry.candidates.length === 0) entry.reason ??= slower > 0 ? `no candidate rank ran faster than the original layer in ORT (${slower} measured or above a slower one)` : 'no rank below break-even';
  }
  opts.onProgress?.(layers.length, layers.length, '');
  return out;
}
