/**
 * Whether reordering narrow conv outputs out of ORT's blocked layout (rewrite/narrow-layout.ts)
 * makes this model faster: measured on the original in ORT, before any rewrite, the
 * original against itself with the barriers (interleaved medians). When it pays, OUT gets
 * them too; the report says what they gained alone, so the low-rank part of OUT's speed-up
 * can be told from it. Exact, so nothing else is checked.
 */
import { Model } from '../graph/graph.js';
import { encodeModel } from '../onnx/codec.js';
import type { ModelProto } from '../onnx/schema.js';
import { hasExternalData } from '../onnx/walk.js';
import type { Report } from '../report/report.js';
import { insertLayoutBarriers, narrowSites, type NarrowSite } from '../rewrite/narrow-layout.js';
import { measureLatency, type LatencyOptions } from '../verify/latency.js';
import type { ModelSource } from '../verify/session.js';

/** Kept only when the original runs at least this much faster with them (below it: noise, or a reorder moved, not saved). */
export const NARROW_MIN_SPEEDUP = 1.02;
/** A model of seconds is told apart in a few runs; a small one gets its 20 within a second or two (convert --narrow-reorder times with it too). */
export const NARROW_TIMING = { maxSeconds: 20, fewestRuns: 6, warmupSeconds: 2 };

export type NarrowReorder = NonNullable<Report['narrowReorder']>;

export interface NarrowCheckOptions {
  block: number | undefined;
  threads: number;
  shapes?: LatencyOptions['shapes'];
  values?: LatencyOptions['values'];
  /** Times the original against the candidate (tests inject one). */
  measure?: typeof measureLatency;
  /** Wraps the timing, for the run's phase times (only when there is something to time). */
  phase?: <T>(fn: () => Promise<T>) => Promise<T>;
}

/** The sites, measured; undefined when the model has none (or ORT has no blocked layout here). */
export async function checkNarrowReorder(original: ModelSource, model: Model, o: NarrowCheckOptions): Promise<{ report: NarrowReorder; sites: NarrowSite[] } | undefined> {
  if (o.block === undefined) return undefined;
  const sites = narrowSites(model, o.block);
  if (sites.length === 0) return undefined;
  const base = { block: o.block, sites: sites.map((s) => ({ conv: s.conv, channels: s.channels, padded: s.padded, readers: s.readers })) };
  if (hasExternalData(model.proto)) return { sites, report: { ...base, kept: false, why: 'not measured: the model keeps its weights in external data' } };
  const measure = (): ReturnType<typeof measureLatency> => (o.measure ?? measureLatency)(original, { bytes: encodeModel(withBarriers(model.proto, sites)) }, { threads: o.threads, shapes: o.shapes, values: o.values, ...NARROW_TIMING });
  const lat = await (o.phase ? o.phase(measure) : measure());
  if (!lat.ok) return { sites, report: { ...base, kept: false, why: `not measured: ${lat.error.message}` } };
  const l = lat.value;
  const kept = l.speedup >= NARROW_MIN_SPEEDUP;
  const timing = { originalMs: l.originalMs.p50, reorderedMs: l.optimizedMs.p50, speedup: l.speedup, runs: l.runs };
  return { sites, report: { ...base, ...timing, kept, why: kept ? 'faster in ORT' : `below ${NARROW_MIN_SPEEDUP}x in ORT` } };
}

/** A copy of `proto` with the barriers (nodes and lists copied; tensors shared, not changed). */
function withBarriers(proto: ModelProto, sites: readonly NarrowSite[]): ModelProto {
  const g = proto.graph!;
  const copy: ModelProto = { ...proto, graph: { ...g, node: g.node.map((n) => ({ ...n })), initializer: [...g.initializer], input: [...g.input] } };
  insertLayoutBarriers(new Model(copy), sites);
  return copy;
}
