/**
 * Which of several rewrites of one layer runs fastest in ORT (issue 19: when latency
 * counts, auto's choice between methods is decided by measured time, not MACs). Fewer MACs
 * is not fewer milliseconds: at equal params, CP's depthwise core ran 1.00–1.73x the time
 * of Tucker-2 (docs/results.md, "Conv decompositions compared").
 *
 * Each contender (a pass and its ranks, all of about the same error: auto's comparison
 * keeps a rival only within the choice's error) is applied to the live graph, its chain cut
 * out as a model at the layer's real input shape, and the graph rolled back (trial.ts);
 * then the layer and every chain are timed together, interleaved, medians
 * (layer-latency.ts `timeChains`), so the load drifts alike over all of them.
 */
import { err, ok, type Result } from '../errors.js';
import type { Model } from '../graph/graph.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import type { SyncGemm } from '../linalg/engine.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { ModelProto } from '../onnx/schema.js';
import type { ExternalReader } from '../onnx/external.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { isSkip, type BoundPass, type PassContext } from '../rewrite/pass.js';
import type { RankPolicy } from '../rewrite/rank-policy.js';
import { AUTO, bind } from '../rewrite/registry.js';
import { createRng } from '../util/rng.js';
import { passByName, passesFor } from '../../passes/dispatch.js';
import type { LayerRecord } from './plan.js';
import { chainModel, timeChains, type ChainsTimer } from './layer-latency.js';
import { withRewrite } from './trial.js';

/** One way to rewrite the layer: a pass bound to it and its ranks. */
export interface Contender {
  bound: BoundPass;
  ranks: readonly number[];
}

export interface Fastest {
  /** Index of the fastest contender (the first of equal medians). */
  index: number;
  originalMs: number;
  /** Median ms per contender, in their order (NaN: its chain could not be cut out). */
  ms: number[];
}

export interface FastestOptions {
  threads: number;
  shapes: ShapeMap;
  external?: ExternalBytes;
  /** Default timeChains; tests inject one that does not depend on machine speed. */
  time?: ChainsTimer;
}

/**
 * Times every contender's chain against the layer in one interleaved loop and returns the
 * fastest; an error when no chain could be cut out and timed. `model` is left as it was.
 */
export async function fastestContender(
  model: Model, layer: LayerInfo, contenders: readonly Contender[], cx: PassContext, opts: FastestOptions,
): Promise<Result<Fastest>> {
  const chains: (ModelProto | undefined)[] = [];
  for (const c of contenders) {
    const t = await withRewrite(layer.graph, c.bound, c.ranks, cx, async (_applied, nodes) => chainModel(model, layer, nodes, opts.shapes, opts.external));
    chains.push(isSkip(t) || typeof t === 'string' ? undefined : t);
  }
  const cut = chains.flatMap((m, i) => (m ? [{ m, i }] : []));
  if (cut.length === 0) return err('unsupported', `no chain of ${layer.name} could be cut out to time`);
  const r = await (opts.time ?? timeChains)(model, layer, cut.map((c) => c.m), opts.shapes, { threads: opts.threads, external: opts.external });
  if (!r.ok) return r;
  const ms = contenders.map(() => NaN);
  cut.forEach((c, j) => { ms[c.i] = r.value.candidateMs[j]!; });
  let index = cut[0]!.i;
  for (const c of cut) if (ms[c.i]! < ms[index]!) index = c.i;
  return ok({ index, originalMs: r.value.originalMs, ms });
}

export interface PreferFasterOptions extends Omit<FastestOptions, 'external'> {
  external?: ExternalReader;
  /** The run's rank policy: the preferred pass's ranks the rival was compared against. */
  policy: RankPolicy;
  seed: number;
  gemm?: SyncGemm;
}

/**
 * The decisions of an auto run without a budget (optimizeModel with decideOnly), where a
 * rival won auto's comparison on error at no more params and MACs: the rival's chain and the
 * preferred pass's at the policy's ranks (both of about the error the policy asked for) are
 * timed together, and the faster is kept, whatever its MACs. Other records are returned as
 * they were; `model` is left as it was. The latency screen then judges the kept chain
 * against the layer as before.
 */
export async function preferFaster(
  model: Model, records: readonly LayerRecord[], opts: PreferFasterOptions,
): Promise<{ records: LayerRecord[]; notes: string[] }> {
  const byName = new Map(findLayers(model, opts.shapes).map((l) => [l.name, l]));
  const out = records.map((r) => ({ ...r }));
  const switched: string[] = [];
  for (const rec of out) {
    const layer = byName.get(rec.name);
    if (!layer || rec.skipped || !rec.pass || !rec.ranks) continue;
    const routed = passesFor(layer, AUTO);
    if (typeof routed === 'string' || routed[0]!.name === rec.pass) continue;
    const cx: PassContext = { model, rng: createRng(opts.seed), external: opts.external, shared: new Map(), gemm: opts.gemm };
    const chosen = passByName(rec.pass);
    let pref: BoundPass, rival: BoundPass;
    try {
      const p = bind(routed[0]!, layer, cx);
      const r = chosen && bind(chosen, layer, cx);
      if (isSkip(p) || !r || isSkip(r)) continue;
      [pref, rival] = [p, r];
    } catch { continue; }
    let ranks;
    try { ranks = pref.chooseRanks(opts.policy); } catch { continue; }
    if (isSkip(ranks)) continue;
    const cost = pref.cost(ranks);
    if (!pref.pays(cost)) continue;
    const f = await fastestContender(model, layer, [{ bound: rival, ranks: rec.ranks }, { bound: pref, ranks }], cx, opts);
    if (!f.ok) continue;
    const [msRival, msPref] = f.value.ms;
    const timed = `timed in ORT: ${rival.method} ${rec.ranks.join(',')} ${fmt(msRival!)} ms, ${pref.method} ${ranks.join(',')} ${fmt(msPref!)} ms`;
    rec.note = rec.note ? `${rec.note}; ${timed}` : timed;
    if (f.value.index !== 1) continue;
    rec.note += `: ${pref.method} kept, faster`;
    rec.pass = pref.name;
    rec.method = pref.method;
    rec.ranks = ranks;
    rec.paramsAfter = cost.after.params;
    if (layer.macs !== undefined && cost.before.macsPerPosition > 0) rec.macsAfter = Math.round((layer.macs * cost.after.macsPerPosition) / cost.before.macsPerPosition);
    switched.push(rec.name);
  }
  const notes = switched.length > 0 ? [`auto: ${switched.length} layer(s) kept the preferred pass's chain, timed faster in ORT than the rival that won on error: ${switched.join(', ')}`] : [];
  return { records: out, notes };
}

const fmt = (ms: number): string => (Number.isFinite(ms) ? (ms >= 1 ? ms.toFixed(2) : ms.toFixed(4)) : '?');
