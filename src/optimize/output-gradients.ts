/**
 * Output sensitivities from gradients (--output-aware): h_c = Σ_p ‖∂y/∂z_{p,c}‖², the same
 * quantity output-sensitivity.ts measures by finite differences, estimated from backward
 * runs (graph/adjoint.ts). With a random sign r_o per output entry (scaled by 1/‖y_o‖ as
 * outputs count relative to their size), g = Jᵀr has E[g_{p,c}²] = ‖J[:, (p,c)]‖²/‖y‖², so
 * h_c ≈ mean over draws of Σ_p g_{p,c}² (Hutchinson on the output side). One run serves
 * every layer; the draws needed fall as the positions summed grow.
 */
import type { Model } from '../graph/graph.js';
import { buildAdjoint } from '../graph/adjoint.js';
import { AdjointEmitter } from '../graph/adjoint-emit.js';
import { encodeModel } from '../onnx/codec.js';
import type { ModelProto, NodeProto } from '../onnx/schema.js';
import { withOutputs } from '../calib/stats-runs.js';
import { createRng } from '../util/rng.js';
import { createSession } from '../verify/session.js';
import { sameFeedDims, type Feeds, type HostTensor } from '../verify/tensor.js';
import { runAll } from './output-error.js';

export interface GradientTarget {
  /** Layer name. */
  name: string;
  /** Its output value. */
  value: string;
  /** Channel axis of that value (negative from the end). */
  axis: number;
}

export interface GradientSensitivity {
  /** Layer name → h per channel. */
  sensitivity: Map<string, Float64Array>;
  /** Layer name → why its gradient is not exact (it goes to finite differences). */
  uncovered: Map<string, string>;
  runs: number;
  feeds: number;
  /** Set when no backward model could be run at all. */
  failure?: string;
}

/** Positions summed per channel that make the per-channel estimate steady (relative s.d. ≈ √(2/(draws·positions))). */
const POSITIONS_WANTED = 256;
const MAX_DRAWS = 32;

/** Nodes reading a value that depends on a target: their inputs and outputs are the shapes the rules need. */
export function valuesToCapture(model: Model, targets: readonly string[]): string[] {
  const g = model.root;
  const seen = new Set<string>(targets);
  const queue = [...targets];
  const nodes = new Set<NodeProto>();
  while (queue.length > 0) {
    const v = queue.pop()!;
    for (const n of g.consumers(v)) {
      if (nodes.has(n)) continue;
      nodes.add(n);
      for (const o of n.output) if (o && !seen.has(o)) { seen.add(o); queue.push(o); }
    }
  }
  const out = new Set<string>(targets);
  for (const n of nodes) for (const v of [...n.input, ...n.output]) if (v && !g.initializer(v)) out.add(v);
  return [...out];
}

/**
 * Dims and element types of `values` at `feed` from one forward run of a copy that outputs,
 * per value, its Shape and its first element (Reshape to 1-D, Slice 0:1, which keeps the
 * type): a few bytes each, where the values themselves could exhaust memory.
 */
async function shapesAndTypes(model: Model, values: readonly string[], feed: Feeds, threads: number): Promise<{ dims: Map<string, readonly number[]>; types: Map<string, string> } | string> {
  const proto = model.proto;
  const taken = new Set<string>();
  for (const g of model.allGraphs()) g.collectNames(taken);
  const e = new AdjointEmitter(model.opsetVersion('') ?? 1, taken);
  const probes = values.map((v) => ({ v, shape: e.one('Shape', [v]), first: e.slice(e.reshape(v, [-1]), [0], [1], [0]) }));
  const outs = probes.flatMap((p) => [p.shape, p.first]);
  const withConstants: ModelProto = { ...proto, graph: { ...proto.graph!, initializer: [...proto.graph!.initializer, ...e.initializers] } };
  const r = await runAll({ bytes: withOutputs(withConstants, outs, e.nodes, undefined) }, [feed], threads);
  if (!r.ok) return r.error.message;
  const got = r.value[0]!;
  const dims = new Map<string, readonly number[]>();
  const types = new Map<string, string>();
  for (const p of probes) {
    dims.set(p.v, Array.from(got[p.shape]!.data as BigInt64Array, Number));
    types.set(p.v, got[p.first]!.type);
  }
  return { dims, types };
}

/**
 * Concrete dims of `values` and of the feed's inputs at `feed`, and which of them are
 * float32 (the only values carrying gradients): what buildAdjoint needs.
 */
export async function adjointShapes(model: Model, values: readonly string[], feed: Feeds, threads: number): Promise<{ dims: Map<string, readonly number[]>; float32: Set<string> } | string> {
  const inputs = new Set(Object.keys(feed));
  const seen = await shapesAndTypes(model, values.filter((v) => !inputs.has(v)), feed, threads);
  if (typeof seen === 'string') return seen;
  const { dims } = seen;
  const float32 = new Set<string>([...seen.types].filter(([, t]) => t === 'float32').map(([v]) => v));
  for (const [k, t] of Object.entries(feed)) { dims.set(k, t.dims); if (t.type === 'float32') float32.add(k); }
  return { dims, float32 };
}

/**
 * h per channel for each target that a gradient reaches exactly, from `draws` backward
 * runs per feed (fewer when `runCost` × runs would pass `maxMacs`, at least one).
 */
export async function gradientSensitivity(
  model: Model, targets: readonly GradientTarget[], feeds: readonly Feeds[], judged: readonly string[],
  opts: {
    threads?: number; seed?: number; maxFeeds?: number; runCost?: number; maxMacs?: number; onProgress?: (done: number, total: number, what: string) => void;
  },
): Promise<GradientSensitivity> {
  const sensitivity = new Map<string, Float64Array>();
  const uncovered = new Map<string, string>();
  const none = (failure: string): GradientSensitivity => ({ sensitivity, uncovered, runs: 0, feeds: 0, failure });
  if (targets.length === 0 || feeds.length === 0) return none('nothing to measure');
  const first = feeds[0]!;
  const seen = await adjointShapes(model, valuesToCapture(model, targets.map((t) => t.value)), first, opts.threads ?? 1);
  if (typeof seen === 'string') return none(seen);
  const { dims, float32 } = seen;
  const byValue = new Map(targets.map((t) => [t.value, t]));
  const perChannel = new Map(targets.map((t) => [t.value, t.axis]));
  const adj = buildAdjoint(model.proto, model.root, { targets: targets.map((t) => t.value), outputs: judged, dims, float32, relative: true, perChannel });
  for (const [v, why] of adj.uncovered) uncovered.set(byValue.get(v)!.name, why);
  if (adj.gradients.size === 0) return { sensitivity, uncovered, runs: 0, feeds: 0 };
  // Draws: enough that the target with the fewest positions per channel is steady.
  let fewest = Infinity;
  for (const v of adj.gradients.keys()) {
    const d = dims.get(v)!;
    const t = byValue.get(v)!;
    const a = t.axis < 0 ? t.axis + d.length : t.axis;
    fewest = Math.min(fewest, d.reduce((x, y) => x * y, 1) / Math.max(1, d[a]!));
  }
  let draws = Math.min(MAX_DRAWS, Math.max(2, Math.ceil(POSITIONS_WANTED / Math.max(1, fewest))));
  let use = feeds.filter((f) => sameFeedDims(first, f)).slice(0, opts.maxFeeds ?? 2);
  const cost = opts.runCost ?? 0;
  const bound = opts.maxMacs ?? Infinity;
  while (use.length > 1 && use.length * draws * cost > bound) use = use.slice(0, -1);
  if (draws * cost > bound) draws = Math.max(1, Math.floor(bound / Math.max(cost, 1)));
  const s = await createSession({ bytes: encodeModel(adj.model) }, { intraOpNumThreads: opts.threads ?? 1, spinning: false });
  if (!s.ok) {
    for (const v of adj.gradients.keys()) uncovered.set(byValue.get(v)!.name, `the backward model did not load (${s.error.message})`);
    return { sensitivity, uncovered, runs: 0, feeds: 0, failure: s.error.message };
  }
  const rng = createRng(opts.seed ?? 0);
  const total = use.length * draws;
  let runs = 0;
  try {
    const sums = new Map<string, Float64Array>();
    for (const f of use) {
      for (let k = 0; k < draws; k++) {
        const feed: Feeds = { ...f };
        for (const [o, input] of adj.cotangents) {
          const d = dims.get(o)!;
          const data = new Float32Array(d.reduce((x, y) => x * y, 1));
          for (let i = 0; i < data.length; i++) data[i] = rng.next() < 0.5 ? -1 : 1;
          feed[input] = { type: 'float32', dims: [...d], data } satisfies HostTensor;
        }
        const r = await s.value.run(feed, [...adj.gradients.values()]);
        if (!r.ok) return { sensitivity, uncovered, runs, feeds: use.length, failure: r.error.message };
        runs++;
        for (const [v, out] of adj.gradients) {
          const h = r.value[out]!.data as Float32Array;
          let acc = sums.get(v);
          if (!acc) { acc = new Float64Array(h.length); sums.set(v, acc); }
          for (let c = 0; c < h.length; c++) acc[c] += h[c]! / total;
        }
        opts.onProgress?.(runs, total, 'output sensitivity (backward run)');
      }
    }
    for (const [v, acc] of sums) {
      if (acc.every(Number.isFinite)) sensitivity.set(byValue.get(v)!.name, acc);
      else uncovered.set(byValue.get(v)!.name, 'non-finite gradients');
    }
  } finally {
    await s.value.release();
  }
  return { sensitivity, uncovered, runs, feeds: use.length };
}
