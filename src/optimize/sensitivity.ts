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
 *
 * By default not every rung is run through the model: each candidate is factorized and
 * its layer's own output error measured (the layer alone, on its captured input), one or
 * two rungs are run, and the others are predicted from the gain between the layer's error
 * and the model's (predict-sensitivity.ts); while a layer's prediction cannot be anchored
 * (a run failed) or its measured gains disagree widely, another rung is run. `allRungs`
 * runs every rung and records what the prediction would have said beside each.
 */
import { err, ok, type Result } from '../errors.js';
import type { Graph, Model } from '../graph/graph.js';
import type { LayerInfo } from '../graph/layers.js';
import { encodeModel } from '../onnx/codec.js';
import { isSkip, type BoundPass, type LayerRewrite, type PassContext } from '../rewrite/pass.js';
import { AUTO, bind } from '../rewrite/registry.js';
import type { Candidate, LayerSensitivity } from '../report/records.js';
import type { RankPolicy } from '../rewrite/rank-policy.js';
import { rankMultiple } from '../linalg/rank.js';
import type { Feeds, HostTensor } from '../verify/tensor.js';
import { passFor, passesFor, type MethodChoice } from '../../passes/dispatch.js';
import { skipCodeOf } from '../report/kinds.js';
import { createRng } from '../util/rng.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { chainKey, chainModel, timeChains, type ChainsTimer, type LayerTiming } from './layer-latency.js';
import { captureModel, downstreamOf, subModel, type Downstream } from './submodel.js';
import type { ModelProto, NodeProto } from '../onnx/schema.js';
import { firstRungs, needsMoreRungs, predictErr2, type Rung } from './predict-sensitivity.js';
import { layerModel } from './layer-error.js';
import { withRewrite } from './trial.js';
import { channelWeightedErr2, diffEnergy, outputErr2, referenceEnergy, runAll, worstErr2 } from './output-error.js';
import { outputChannelAxis } from './output-sensitivity.js';
import { rowScales } from '../linalg/row-weights.js';
import { COMPARE_WORK } from '../rewrite/challenge.js';

export type { Candidate, LayerSensitivity };

/** The energy ladder the candidates come from (ranks deduplicated, only those that pay). */
export const LADDER = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999];

type Outputs = Record<string, HostTensor>[];

/**
 * Applies one rewrite, runs it (`run` sees the graph rewritten, the nodes there before and
 * the chain written; undefined: not run), and restores the graph exactly (trial.ts).
 */
async function trial(
  g: Graph, pass: BoundPass, ranks: number[], cx: PassContext,
  run: (before: ReadonlySet<NodeProto>, chain: readonly NodeProto[]) => Promise<Result<Outputs | undefined>>,
): Promise<Result<{ outs?: Outputs; relError: number; dataError?: number }>> {
  const t = await withRewrite(g, pass, ranks, cx, async (applied, chain, before) => {
    const outs = await run(before, chain);
    return outs.ok ? ok({ outs: outs.value, relError: applied.relError, dataError: applied.dataError }) : outs;
  });
  return isSkip(t) ? err('rank', t.skip) : t;
}

/** Tensors of one run of the original: each main-graph layer's downstream part and what it reads. */
interface Capture {
  parts: ReadonlyMap<NodeProto, Downstream>;
  /** Per feed: the graph outputs and every boundary tensor. */
  values: Outputs;
}

/** One run of the original exposing what every listed main-graph layer's part needs; undefined when it fails. */
async function capture(model: Model, layers: readonly LayerInfo[], feeds: readonly Feeds[], threads: number): Promise<Capture | undefined> {
  const parts = new Map<NodeProto, Downstream>();
  for (const l of layers) if (l.graph === model.root) parts.set(l.node, downstreamOf(l.graph, l.node));
  if (parts.size === 0) return undefined;
  const extra = [...parts.values()].flatMap((p) => p.boundary);
  const r = await runAll({ bytes: encodeModel(captureModel(model.proto, extra)) }, feeds, threads);
  return r.ok ? { parts, values: r.value } : undefined;
}

/**
 * The rewritten model's outputs: its downstream part run on the captured tensors, the
 * other outputs as captured; the whole model when the part cannot be cut out or run.
 */
async function runRewritten(model: Model, layer: LayerInfo, before: ReadonlySet<NodeProto>, feeds: readonly Feeds[], cap: Capture | undefined, threads: number): Promise<Result<Outputs>> {
  const part = cap?.parts.get(layer.node);
  if (cap && part) {
    const sm = subModel(model.proto, layer.graph, part, before, feeds, cap.values);
    if (typeof sm !== 'string') {
      const r = await runAll({ bytes: encodeModel(sm.model) }, sm.feeds, threads);
      if (r.ok) return ok(cap.values.map((base, k) => ({ ...base, ...r.value[k] })));
    }
  }
  return runAll({ bytes: encodeModel(model.proto) }, feeds, threads);
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
  /**
   * Time each candidate as a one-layer model and keep only those measured faster; a chain
   * of the same pass, ranks and layer shape (repeated blocks) is timed once. `time`: default
   * timeRewrite (tests inject one).
   */
  latency?: { threads: number; shapes: ShapeMap; external?: ExternalBytes; time?: ChainsTimer };
  onProgress?: (done: number, total: number, layer: string) => void;
  /** Run every trial on the whole model (the reference method: same results, slower). */
  wholeModel?: boolean;
  /** The pass for a layer; default the one `method` picks (another rewrite can be measured the same way). */
  passFor?: (layer: LayerInfo) => LayerRewrite<unknown> | string;
  /**
   * Run every rung in ORT (the reference) instead of one per layer with the others
   * predicted; each candidate then also carries the prediction (`predictedErr2`).
   */
  allRungs?: boolean;
  /** Intra-op threads of the runs that measure errors (not of the timings); default 1. */
  threads?: number;
  /**
   * Under auto, offer the rungs of the other passes that compete for a layer too (see
   * RIVAL_RATIOS). Default false: with every rival rung measured, the bench models' error
   * budgets came out the same or no better in what they save, at 1.5–5.8x the time (PP-OCRv4
   * rec, --max-error cosine:0.995: the same one layer, 21 s → 49 s; rec with --calib,
   * cosine:0.99, saving params: the same 0.626 of the layers' params, 47 s → 71 s; det,
   * cosine:0.995: CP 160 for Tucker-2 64,24 on one layer, params 0.953 both, latency p10
   * 1.01–1.02x both, 16 s → 93 s; cls: the same).
   */
  rivals?: boolean;
}

/**
 * A candidate with how its model error was obtained: `measured` in ORT or predicted from
 * the layer's own error `layerError` (predict-sensitivity.ts); `predictedErr2` is the
 * prediction beside a measurement when every rung was measured.
 */
export interface PredictedCandidate extends Candidate {
  /**
   * The layer's own relative output error: measured on the sensitivity inputs with the
   * layer cut out alone (layer-error.ts), or, where it cannot be, the factorization's
   * figure (on the calibration statistics when data-aware, else the weight's).
   */
  layerError: number;
  measured: boolean;
  predictedErr2?: number;
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

/**
 * A layer's output-channel weights for its own error, from its output sensitivities
 * (PassContext.outputSensitivity, h_c/mean(h) + floor as the fits weigh them): to first
 * order the weighted error is the model's, so the gain from layer to model error that the
 * prediction assumes is nearer constant across rungs. Undefined without sensitivities.
 */
function layerWeights(cx: PassContext, layer: LayerInfo): { w: Float64Array; axis: number } | undefined {
  const h = cx.outputSensitivity?.get(layer.name);
  const axis = outputChannelAxis(layer);
  if (!h || axis === undefined) return undefined;
  const s = rowScales(h);
  return s && { w: s.map((x) => x * x), axis };
}

/** The outputs of `nodes` (the layer, or the chain that replaced it) alone on the captured inputs; undefined when they cannot be cut out or run. */
async function runLayer(model: Model, layer: LayerInfo, nodes: readonly NodeProto[], feeds: readonly Feeds[], cap: Capture, threads: number): Promise<Outputs | undefined> {
  if (layer.graph !== model.root) return undefined;
  const out = layer.node.output[0];
  if (!out) return undefined;
  const lm = layerModel(model.proto, layer.graph, nodes, out, feeds, cap.values);
  if (typeof lm === 'string') return undefined;
  const r = await runAll({ bytes: encodeModel(lm.model) }, lm.feeds, threads);
  return r.ok ? r.value : undefined;
}

/**
 * Other methods' rungs (issue 19). Under auto a layer several passes take (a kxk conv:
 * Tucker-2, then CP, spatial SVD, TT, CP-4) offers the rungs of each pass that competes
 * with the preferred one (`challenge`), so the allocation can pick per layer the method
 * whose candidate saves most per unit of error. Bounded so sensitivity does not grow by the
 * number of methods:
 * - a rival's rungs are at the preferred pass's picked rungs' shares of params kept (its
 *   ratio policy: no fit to choose them), RIVAL_RATIOS when the preferred pass offers none,
 *   at most RIVAL_RUNGS of them, none whose fit costs more than auto's comparisons may
 *   spend (the pass's fitWork past PassContext.compareWork, default COMPARE_WORK);
 * - each is fitted (quickly: PassContext.quickFits, so CP and CP-4 skip their refit under
 *   the sensitivity bound, 3/4 of their time, and err 0.3–2% high; a quick fit whose terms
 *   cancel is not offered, as the fit built would be refitted or declined) and its layer's own
 *   error measured (one small session), and each is run through the model (predicted
 *   from the most accurate one, a cheap rung came out up to 3x optimistic);
 * - with latency its chains are timed in the same interleaved loop as the preferred pass's,
 *   the passes with a measured slow path (TT, CP-4: their *_SLOW_PATH) too: the measured times,
 *   not the prior measurement, decide (rivals are asked for: --all-methods);
 * - a rival rung no better than a rung kept before it (no lower error, and no cheaper in
 *   params, MACs, nor measured ms) is dropped.
 * Rival fits draw from their own random stream (seeded by the layer's name), so the
 * preferred pass's fits, and its candidates, are the same as without rivals.
 */
export const RIVAL_RATIOS = [0.15, 0.3, 0.5, 0.7];
export const RIVAL_RUNGS = 2;

/** A deterministic seed from a layer's name (FNV-1a). */
function nameSeed(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** The passes whose rungs a layer offers besides the preferred one's (see RIVAL_RATIOS). */
function rivalsOf(layer: LayerInfo, chosen: LayerRewrite<unknown>, opts: SensitivityOptions): LayerRewrite<unknown>[] {
  if (opts.method !== AUTO || !opts.rivals) return [];
  const all = passesFor(layer, opts.method);
  if (typeof all === 'string') return [];
  return all.filter((p) => p.name !== chosen.name && p.challenge !== undefined);
}

/** At most `max` of a list: the first, the last and an even spread between. */
function spread<T>(list: readonly T[], max: number): T[] {
  if (list.length <= max) return [...list];
  if (max <= 1) return list.slice(-1);
  return Array.from({ length: max }, (_, k) => list[Math.round((k * (list.length - 1)) / (max - 1))]!);
}

/** Whether candidate `d` is at least as good as `c` in error and in every cost (ms only when both were timed). */
function noWorse(d: Candidate, c: Candidate): boolean {
  return d.outErr2 <= c.outErr2 && d.after.params <= c.after.params && d.after.macsPerPosition <= c.after.macsPerPosition
    && (c.ms === undefined || (d.ms !== undefined && d.ms <= c.ms));
}

export async function measureSensitivity(model: Model, layers: readonly LayerInfo[], opts: SensitivityOptions): Promise<LayerSensitivity[]> {
  const out: LayerSensitivity[] = [];
  // The reference does not change between trials: its energy is summed once.
  const refEnergy = referenceEnergy(opts.reference);
  const threads = opts.threads ?? 1;
  const cap = opts.wholeModel ? undefined : await capture(model, layers.filter((l) => typeof passOrReason(l, opts) !== 'string'), opts.feeds, threads);
  const timings = new Map<string, LayerTiming>();
  const timingInputs = new Map<string, Feeds>();
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
    // Why rungs were declined (a CP still degenerate after its refit under the sensitivity bound): the layer's reason when none is left.
    const declined: string[] = [];
    let priced = false;
    for (const e of LADDER) {
      const policy: RankPolicy = { kind: 'energy', energy: e, ...(opts.align ? { align: opts.align } : {}) };
      let r;
      try { r = pass.chooseRanks(policy); } catch { continue; }
      // The CP energy search finds no rank that both meets E and is stable (every fit degenerate): said if no rung is left.
      if (isSkip(r) && skipCodeOf(r.skip) === 'degenerate-cp') declined.push(r.skip);
      if (isSkip(r) || seen.has(r.join(','))) continue;
      const c = pass.cost(r);
      entry.before = c.before;
      priced = true;
      if (!pass.pays(c)) continue;
      seen.add(r.join(','));
      ranksList.push(r);
    }
    const max = opts.maxCandidates ?? 4;
    // Keep the cheapest, the most accurate and an even spread between.
    const pickList = ranksList.length <= max ? ranksList : Array.from({ length: max }, (_, k) => ranksList[Math.round((k * (ranksList.length - 1)) / (max - 1))]);
    // The other methods' rungs (see RIVAL_RATIOS), at the shares of params the preferred pass's rungs keep.
    const rivalCx: PassContext = { ...opts.cx, rng: createRng(nameSeed(layer.name)), quickFits: true };
    const rivals: { pass: BoundPass; picks: number[][] }[] = [];
    for (const rp of rivalsOf(layer, chosen, opts)) {
      let rb: BoundPass;
      try {
        const b = bind(rp, layer, rivalCx);
        if (isSkip(b)) continue;
        rb = b;
      } catch { continue; }
      const ratios = pickList.length > 0 ? pickList.map((r) => { const c = pass.cost(r); return c.after.params / Math.max(c.before.params, 1); }) : RIVAL_RATIOS;
      const got = new Set<string>();
      const list: number[][] = [];
      for (const ratio of ratios) {
        let r;
        try { r = rb.chooseRanks({ kind: 'ratio', ratio, ...(opts.align ? { align: opts.align } : {}) }); } catch { continue; }
        if (isSkip(r) || got.has(r.join(',')) || rb.fitWork(r) > (opts.cx.compareWork ?? COMPARE_WORK)) continue;
        const c = rb.cost(r);
        if (!priced) { entry.before = c.before; priced = true; }
        if (!rb.pays(c)) continue;
        got.add(r.join(','));
        list.push(r);
      }
      if (list.length > 0) rivals.push({ pass: rb, picks: spread(list, RIVAL_RUNGS) });
    }
    let slower = 0;
    let untimed: string | undefined;
    const first = new Set(firstRungs(pickList.length));
    // The layer's own output, to measure each candidate's own error on the same inputs.
    // A weight stored fp16/bf16 runs through its Cast, as in the model (the chain's factors do too).
    const alone = layer.cast ? [layer.cast.node, layer.node] : [layer.node];
    const own = cap && (pickList.length > 0 || rivals.length > 0) ? await runLayer(model, layer, alone, opts.feeds, cap, threads) : undefined;
    const weights = layerWeights(opts.cx, layer);
    const measure = (before: ReadonlySet<NodeProto>): Promise<Result<Outputs>> => runRewritten(model, layer, before, opts.feeds, cap, threads);
    const errOf = (outs: Outputs): number => worstErr2(diffEnergy(opts.reference, outs), refEnergy);
    // Each candidate is factorized and its layer's own error measured; without latency, the
    // rungs run first are run through the model in the same trial. With latency, the
    // chains are cut out as models and timed together with the layer once all are known,
    // and only the rungs measured faster are run through the model (a trial again: the fit
    // is cached on the statistics, so nothing is factorized twice when data-aware).
    interface Tried { k: number; bp: BoundPass; ranks: number[]; relError: number; dataError?: number; layerErr2?: number; outs?: Outputs; key?: string; chain?: ModelProto | string; ms?: number }
    const tryRung = async (bp: BoundPass, cx: PassContext, k: number, ranks: number[], runModel: boolean): Promise<Tried | undefined> => {
      // One event per candidate: a large layer's trials can take minutes.
      opts.onProgress?.(i, layers.length, `${layer.name}${bp === pass ? '' : ` ${bp.method}`} at rank ${ranks.join('x')}`);
      const key = opts.latency ? chainKey(layer, bp.name, ranks, opts.latency.shapes) : undefined;
      let layerErr2: number | undefined;
      let chain: ModelProto | string | undefined;
      const t = await trial(layer.graph, bp, ranks, cx, async (before, nodes) => {
        if (opts.latency && key && !timings.has(key)) chain = chainModel(model, layer, nodes, opts.latency.shapes, opts.latency.external);
        if (own && cap) {
          const got = await runLayer(model, layer, nodes, opts.feeds, cap, threads);
          if (got) layerErr2 = (weights && channelWeightedErr2(own, got, weights.w, weights.axis)) ?? outputErr2(own, got);
        }
        return runModel ? measure(before) : ok(undefined);
      });
      // A rung the pass declines (a CP still degenerate after its refit under the sensitivity
      // bound: never shipped) is unusable, not offered.
      if (!t.ok && t.error.kind === 'rank') declined.push(t.error.message);
      return t.ok ? { k, bp, ranks, relError: t.value.relError, dataError: t.value.dataError, layerErr2, outs: t.value.outs, key, chain } : undefined;
    };
    const tried: Tried[] = [];
    for (const [k, ranks] of pickList.entries()) {
      const t = await tryRung(pass, opts.cx, k, ranks, !opts.latency && (opts.allRungs === true || first.has(k)));
      if (t) tried.push(t);
    }
    // Rival rungs are not run through the model here (see RIVAL_RATIOS).
    const rivalTried: Tried[] = [];
    for (const rv of rivals) {
      for (const [k, ranks] of rv.picks.entries()) {
        const t = await tryRung(rv.pass, rivalCx, k, ranks, false);
        if (t) rivalTried.push(t);
      }
    }
    if (opts.latency) {
      const lat = opts.latency;
      // Every method's chains of this layer in one interleaved loop.
      const fresh = [...tried, ...rivalTried].filter((c) => c.key && !timings.has(c.key) && c.chain && typeof c.chain !== 'string');
      if (fresh.length > 0) {
        const time = lat.time ?? timeChains;
        const r = await time(model, layer, fresh.map((c) => c.chain as ModelProto), lat.shapes, { threads: lat.threads, external: lat.external, inputs: timingInputs });
        if (r.ok) fresh.forEach((c, j) => timings.set(c.key!, { originalMs: r.value.originalMs, candidateMs: r.value.candidateMs[j]! }));
        else untimed = r.error.message;
      }
      for (const list of [tried, rivalTried]) {
        for (const c of [...list]) {
          const lt = c.key ? timings.get(c.key) : undefined;
          // Where latency decides, a candidate that could not be timed cannot be kept: say why.
          if (!lt) { if (untimed) list.splice(list.indexOf(c), 1); continue; }
          entry.ms = entry.ms === undefined ? lt.originalMs : Math.min(entry.ms, lt.originalMs);
          c.ms = lt.candidateMs;
          // Keep a rewrite only when ORT runs it faster than the layer it replaces.
          if (lt.candidateMs >= lt.originalMs) { slower++; list.splice(list.indexOf(c), 1); }
        }
      }
      for (const c of tried) {
        if (!(opts.allRungs || first.has(c.k))) continue;
        opts.onProgress?.(i, layers.length, `${layer.name} at rank ${c.ranks.join('x')}`);
        const t = await trial(layer.graph, pass, c.ranks, opts.cx, measure);
        if (t.ok && t.value.outs) c.outs = t.value.outs;
      }
    }
    const candsOf = (list: readonly Tried[]): PredictedCandidate[] => list.map((c) => ({
      pass: c.bp.name, ranks: c.ranks, after: c.bp.cost(c.ranks).after, relError: c.relError,
      outErr2: c.outs ? errOf(c.outs) : NaN, ms: c.ms, layerError: NaN, measured: c.outs !== undefined,
    }));
    // One measure of the layer's error for all its rungs: its own output when every rung
    // has it, else the factorizations' figures.
    const ownRan = (list: readonly Tried[]): boolean => list.every((c) => c.layerErr2 !== undefined && Number.isFinite(c.layerErr2));
    const layerErrors = (list: readonly Tried[], cs: PredictedCandidate[], useOwn: boolean): void => {
      cs.forEach((c, j) => { const t = list[j]!; c.layerError = useOwn ? Math.sqrt(t.layerErr2 ?? NaN) : t.dataError ?? t.relError; });
    };
    const rungsOf = (cs: readonly PredictedCandidate[]): Rung[] => cs.map((c) => ({ layerErr2: c.layerError ** 2, measuredErr2: c.measured ? c.outErr2 : undefined }));
    // Until a prediction can be anchored (the first rung failed or ran slower) and the
    // measured gains agree, run one more rung: the unmeasured one nearest the middle.
    const settle = async (cs: PredictedCandidate[], bp: BoundPass, cx: PassContext): Promise<void> => {
      while (needsMoreRungs(rungsOf(cs))) {
        const left = cs.filter((c) => !c.measured);
        const c = left[Math.floor((left.length - 1) / 2)];
        if (!c) break;
        opts.onProgress?.(i, layers.length, `${layer.name}${bp === pass ? '' : ` ${bp.method}`} at rank ${c.ranks.join('x')}`);
        const t = await trial(layer.graph, bp, c.ranks, cx, measure);
        // A rung whose run fails is not offered, as when it is run first.
        if (t.ok && t.value.outs) {
          c.outErr2 = errOf(t.value.outs);
          c.measured = true;
        } else {
          cs.splice(cs.indexOf(c), 1);
        }
      }
    };
    const cands = candsOf(tried);
    const ran = ownRan(tried);
    layerErrors(tried, cands, ran);
    if (opts.allRungs) {
      // Beside each measurement, what a default run would have predicted from its first rungs.
      const anchors = rungsOf(cands).map((r, j) => (first.has(pickList.indexOf(cands[j]!.ranks)) ? r : { layerErr2: r.layerErr2 }));
      for (const c of cands) {
        const p = predictErr2(anchors, c.layerError ** 2);
        if (Number.isFinite(p)) c.predictedErr2 = p;
      }
    } else {
      await settle(cands, pass, opts.cx);
    }
    for (const c of cands) if (!c.measured) c.outErr2 = predictErr2(rungsOf(cands), c.layerError ** 2);
    // A rung neither measured nor predictable is not offered.
    const kept: Candidate[] = cands.filter((c) => c.measured || Number.isFinite(c.outErr2));
    // Rival rungs: their layer errors measured as the preferred pass's were, and each of
    // them (at most RIVAL_RUNGS) run through the model. The gain from layer to model error
    // differs by method and by rank: on PP-OCRv4 rec, predicting CP's rungs from Tucker-2's
    // gain let a budget's first allocation overshoot, and predicting a rival's cheap rung
    // from its own accurate one put CP rank 30 on p2o.Conv.36 at 0.00221 (measured 0.00686),
    // which ended rec's error search at 0.752–0.765 of the params against 0.629 without rivals.
    // A rung whose run fails is not offered.
    const rivalOwn = tried.length > 0 ? ran : ownRan(rivalTried);
    for (const rv of rivals) {
      const mine = rivalTried.filter((c) => c.bp === rv.pass && (!rivalOwn || (c.layerErr2 !== undefined && Number.isFinite(c.layerErr2))));
      const cs = candsOf(mine);
      layerErrors(mine, cs, rivalOwn);
      for (const c of cs) {
        // The reference (allRungs): the prediction from the preferred pass's rungs beside it.
        if (opts.allRungs) {
          const p = predictErr2(rungsOf(cands), c.layerError ** 2);
          if (Number.isFinite(p)) c.predictedErr2 = p;
        }
        opts.onProgress?.(i, layers.length, `${layer.name} ${rv.pass.method} at rank ${c.ranks.join('x')}`);
        const t = await trial(layer.graph, rv.pass, c.ranks, rivalCx, measure);
        if (t.ok && t.value.outs) { c.outErr2 = errOf(t.value.outs); c.measured = true; }
      }
      for (const c of cs) {
        if (!(c.measured || Number.isFinite(c.outErr2))) continue;
        if (!kept.some((d) => noWorse(d, c))) kept.push(c);
      }
    }
    entry.candidates.push(...kept);
    if (entry.candidates.length === 0) {
      entry.reason ??= untimed ? `its candidates could not be timed in ORT: ${untimed}`
        : slower > 0 ? `no candidate rank ran faster than the original layer in ORT (${slower} measured slower)`
        : declined.length > 0 ? `every candidate rank declined (${declined.length}): ${declined[0]}` : 'no rank below break-even';
    }
  }
  opts.onProgress?.(layers.length, layers.length, '');
  return out;
}
