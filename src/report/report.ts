/** The optimize report: one object for machines (--report), one table for people. */
import type { StoredWeights } from '../rewrite/quantize-factors.js';
import type { ModelSummary } from '../graph/summary.js';
import { opDiff } from '../graph/summary.js';
import type { Room } from '../graph/room.js';
import type { LayerRecord, LayerSensitivity } from './records.js';
import type { LatencyStats } from '../verify/latency.js';
import type { VerifyStats } from '../verify/verify.js';
import { bytes, human, ratio, table } from './format.js';
import { groupSkipReasons, type CalibrationKind, type PolicyKind, type UnitKind } from './kinds.js';
import { sitesSummary } from '../rewrite/narrow-layout.js';

export interface ModelSide extends ModelSummary { bytes: number; file: string }

export interface Report {
  /** The version of this JSON's shape (schema/report.schema.json). */
  schemaVersion: number;
  tool: string;
  seed: number;
  /** The policy in words; `policyKind` is the same as one word. */
  policy: string;
  policyKind: PolicyKind;
  input: ModelSide;
  output: ModelSide;
  layers: LayerRecord[];
  /** How verification inputs were made: random (seeded) or the files given with --input. */
  inputs?: string;
  /** What the calibration inputs were (data-aware or budgeted runs). */
  calibration?: string;
  /** Where the calibration inputs came from, as one word, and how many there were. */
  calibrationKind?: CalibrationKind;
  calibrationSamples?: number;
  /** A budgeted run: the target, what was achieved, and whether it was met. */
  budget?: {
    kind: string; unit: string;
    /** What the budget saves (or a latency target measures), as one word; set by buildReport. */
    unitKind?: UnitKind; target: number; achieved: number; met: boolean; why?: string;
    predictedError: number; measuredError: number; attempts: number;
    /**
     * Error budgets: the upper bound on the output error for inputs not among the `feeds`
     * calibration feeds that the budget was judged by (optimize/output-error.ts errBound);
     * with `heldOutFeeds`, for the pooled error over that many held-out feeds (--verify-data).
     * `samples` (and `heldOutSamples`): the spread was over the samples those feeds hold,
     * each feed's outputs split along their batch axis.
     */
    unseenError?: number; feeds?: number; heldOutFeeds?: number; samples?: number; heldOutSamples?: number;
    /** Multi-stage runs: where each stage ended (fraction of the unit kept, measured error). */
    stages?: { stage: number; target: number; params?: number; macs?: number; latency?: number; measuredError: number; top1?: number; layers: number }[];
  };
  /**
   * A budgeted run's per-layer sensitivity measurements: with `layers`, this makes the
   * report a plan file, so `--plan REPORT` tries another budget without measuring again.
   */
  sensitivity?: LayerSensitivity[];
  verify?: VerifyStats & { minCosine?: number; atol?: number; rtol?: number };
  /** --weights fp16|int8: what the new factors were stored as (absent: fp32, as the rewrite made them). */
  weights?: StoredWeights;
  latency?: LatencyStats;
  latencyWeb?: LatencyStats;
  /** Total time of the run, seconds. */
  seconds: number;
  /**
   * Where the time went, seconds per phase (each the sum of its parts when it runs more
   * than once, e.g. per stage); a phase that did not run is absent. `sensitivity` covers
   * the per-layer trials, `allocation` a budget's checks of each allocation in ORT,
   * `factorization` the final decomposition, `latency` and `latencyWeb` the timing of
   * both models after verification.
   */
  timings?: Partial<Record<TimingPhase, number>>;
  notes: string[];
  /** Where the original's time goes by layer kind, and the speed-up bound it sets (graph/room.ts). */
  room?: Room;
  /**
   * Narrow conv outputs taken out of ORT's blocked layout (optimize/narrow-reorder.ts): the
   * convs, what it gained on the original alone (absent when not measured), whether OUT has it.
   */
  narrowReorder?: {
    block: number;
    sites: { conv: string; channels: number; padded: number; readers: string[] }[];
    originalMs?: number; reorderedMs?: number; speedup?: number; runs?: number;
    kept: boolean; why: string;
  };
}

export const TIMING_PHASES = ['shapes', 'profile', 'statistics', 'outputSensitivity', 'sensitivity', 'allocation', 'screen', 'factorization', 'refine', 'write', 'verification', 'latency', 'latencyWeb', 'narrowReorder'] as const;
export type TimingPhase = typeof TIMING_PHASES[number];

const f3 = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '?' : x.toFixed(3));
/** A cosine to 4 decimals, rounded down (past float noise): 0.98996 against a 0.99 threshold must not read 0.990. */
const cos4 = (x: number): string => (Number.isFinite(x) ? (Math.floor(x * 1e4 + 1e-7) / 1e4).toFixed(4) : '?');
const sci = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '?' : x.toExponential(2));

function latencyLine(label: string, l: LatencyStats): string {
  const o = l.originalMs;
  const n = l.optimizedMs;
  return `${label}: original ${o.p50.toFixed(3)} ms (p10 ${o.p10.toFixed(3)}, p90 ${o.p90.toFixed(3)})  ->  optimized ${n.p50.toFixed(3)} ms (p10 ${n.p10.toFixed(3)}, p90 ${n.p90.toFixed(3)})  speed-up ${l.speedup.toFixed(2)}x  [${l.runs} runs each, ${l.threads} thread(s), ${outputsText(l)}]`;
}

/** How the timed runs treated the outputs (verify/kept-outputs.ts). */
export function outputsText(l: Pick<LatencyStats, 'outputsKept'>): string {
  return l.outputsKept ? 'outputs kept in ORT, not copied out' : 'outputs copied out to JS (a model over 512 MiB or with external data, or outputs ORT would not cut)';
}

/** How an error budget's judged error relates to the calibration feeds (optimize/output-error.ts errBound). */
export function unseenWhy(b: Pick<NonNullable<Report['budget']>, 'feeds' | 'heldOutFeeds' | 'samples' | 'heldOutSamples'>): string {
  const feeds = b.feeds ?? 0;
  if (b.samples !== undefined) {
    const what = b.heldOutFeeds ? `the ${b.heldOutSamples ?? b.heldOutFeeds} held-out ${b.heldOutSamples ? 'sample(s)' : 'feed(s)'} verified` : 'unseen inputs';
    return `a 95% bound for ${what} from the spread over ${b.samples} calibration samples in ${feeds} feed(s)`;
  }
  if (feeds < 2) return 'one calibration feed: no margin for unseen inputs';
  const what = b.heldOutFeeds ? `the ${b.heldOutFeeds} held-out feed(s) verified` : 'unseen inputs';
  return `a 95% bound for ${what} from the spread over ${feeds} calibration feeds`;
}

/** How the text and HTML reports name the runtime a verification ran in (Report.verify.backend). */
export function runtimeLabel(backend: string | undefined): string {
  return backend === 'ort-web-wasm' ? 'ORT-web wasm' : 'ORT-node';
}

export function renderReport(r: Report, opts: { allLayers?: boolean } = {}): string {
  const L: string[] = [];
  const a = r.input;
  const b = r.output;
  L.push(`onnx-lr optimize: ${a.file} -> ${b.file}   (${r.policy}, seed ${r.seed}, ${r.seconds.toFixed(1)} s)`);
  L.push('');
  L.push(table(
    ['', 'before', 'after', 'ratio'],
    [
      ['nodes', String(a.nodeCount), String(b.nodeCount), ratio(b.nodeCount, a.nodeCount)],
      ['params', human(a.params), human(b.params), ratio(b.params, a.params)],
      ['MACs (decomposable layers)', human(a.macs), human(b.macs), ratio(b.macs, a.macs)],
      ['file size', bytes(a.bytes), bytes(b.bytes), ratio(b.bytes, a.bytes)],
      ...(r.latency ? [['latency p50, ORT-node', `${r.latency.originalMs.p50.toFixed(3)} ms`, `${r.latency.optimizedMs.p50.toFixed(3)} ms`, ratio(r.latency.optimizedMs.p50, r.latency.originalMs.p50)]] : []),
      ...(r.latencyWeb ? [['latency p50, ORT-web wasm', `${r.latencyWeb.originalMs.p50.toFixed(3)} ms`, `${r.latencyWeb.optimizedMs.p50.toFixed(3)} ms`, ratio(r.latencyWeb.optimizedMs.p50, r.latencyWeb.originalMs.p50)]] : []),
    ],
    ['l', 'r', 'r', 'r'],
  ));
  const diff = opDiff(a.ops, b.ops);
  L.push('');
  L.push(`op counts: ${diff.length === 0 ? 'unchanged' : diff.map((d) => `${d.op} ${d.before}->${d.after}`).join(', ')}  (nodes ${b.nodeCount - a.nodeCount >= 0 ? '+' : ''}${b.nodeCount - a.nodeCount})`);
  const rewritten = r.layers.filter((l) => !l.skipped);
  const skipped = r.layers.filter((l) => l.skipped);
  L.push('');
  L.push(`layers: ${rewritten.length} rewritten, ${skipped.length} left as they were`);
  const shown = opts.allLayers ? r.layers : rewritten;
  if (shown.length > 0) {
    L.push(table(
      ['layer', 'op', 'weight', 'method', 'ranks', 'params', 'MACs', 'weight err', 'ms', 'note'],
      shown.map((l) => [
        l.name, l.op, l.weightShape.join('x'), l.skipped ? '-' : l.method ?? '', l.ranks && !l.skipped ? l.ranks.join(',') : '',
        l.skipped ? human(l.paramsBefore) : `${human(l.paramsBefore)}->${human(l.paramsAfter)}`,
        l.skipped || l.macsBefore === undefined ? human(l.macsBefore) : `${human(l.macsBefore)}->${human(l.macsAfter)}`,
        l.skipped ? '' : sci(l.relError), String(l.ms), l.skipped ? l.reason ?? '' : '',
      ]),
      ['l', 'l', 'l', 'l', 'l', 'r', 'r', 'r', 'r', 'l'],
    ));
  }
  if (!opts.allLayers && skipped.length > 0) {
    L.push(`skipped: ${groupSkipReasons(skipped.map((l) => l.reason ?? '')).join('; ')}  (--report has each layer's reason)`);
  }
  if (r.calibration) L.push(`calibration inputs: ${r.calibration}`);
  if (r.budget) {
    const b = r.budget;
    L.push(`budget: ${b.kind} target ${b.target.toPrecision(3)}, achieved ${b.achieved.toPrecision(3)} (${b.unit}) — ${b.met ? 'met' : 'NOT met'}` +
      `; output rel. error on calibration inputs: predicted ${b.predictedError.toPrecision(3)}, measured ${b.measuredError.toPrecision(3)}` +
      (b.unseenError === undefined ? '' : `, judged at ${b.unseenError.toPrecision(3)} (${unseenWhy(b)})`) +
      (b.attempts > 1 ? `; ${b.attempts} allocations` : ''));
    if (!b.met && b.why) L.push(`  why: ${b.why}`);
    for (const st of b.stages ?? []) {
      // The stage records the fraction kept under the name of what the budget saves.
      const [what, kept] = st.params !== undefined ? ['params', st.params] : st.macs !== undefined ? ['MACs', st.macs] : ['latency', st.latency];
      L.push(`  stage ${st.stage}: target ${st.target.toPrecision(3)}${kept === undefined ? '' : `, ${what} kept ${kept.toFixed(3)}`}` +
        `, ${st.layers} layer(s) factored, measured error ${st.measuredError.toPrecision(3)}${st.top1 === undefined ? '' : `, top-1 ${st.top1.toFixed(3)}`}`);
    }
  }
  if (r.verify) {
    const v = r.verify;
    L.push('');
    L.push(`verification (${runtimeLabel(v.backend)}, ${v.runs} run(s), ${r.inputs ?? 'seeded random inputs'}): ${v.pass ? 'PASS' : 'FAIL'}` +
      `  [min cosine ${v.minCosine ?? '-'}${v.atol !== undefined ? `, atol ${v.atol}, rtol ${v.rtol}` : ''}]`);
    L.push(table(
      ['output', 'max abs', 'mean abs', 'rel L2', 'cosine', 'top-1', 'result'],
      v.outputs.map((o) => [o.name, sci(o.maxAbs), sci(o.meanAbs), sci(o.relL2), cos4(o.cosine), o.top1 === undefined ? '' : f3(o.top1), o.checked === false ? 'not checked' : o.pass ? 'ok' : 'FAIL']),
      ['l', 'r', 'r', 'r', 'r', 'r', 'l'],
    ));
    for (const reason of v.reasons) L.push(`  ${reason}`);
    for (const o of v.outputs) {
      if (o.checked === false || !o.worstFeed) continue;
      const w = o.worstFeed;
      L.push(`  ${o.name}: worst of the ${w.of ?? v.runs} ${w.samples ? 'samples' : 'inputs'} is #${w.index + 1}, cosine ${cos4(w.cosine)}, rel L2 ${sci(w.relL2)}`);
    }
  }
  if (r.latency) { L.push(''); L.push(latencyLine('latency ORT-node', r.latency)); }
  if (r.room) L.push(roomLine(r.room));
  if (r.narrowReorder) L.push(narrowReorderLine(r.narrowReorder));
  if (r.latencyWeb) L.push(latencyLine('latency ORT-web (wasm)', r.latencyWeb));
  if (r.timings) {
    const parts = TIMING_PHASES.flatMap((p) => (r.timings![p] === undefined ? [] : [`${p} ${r.timings![p]!.toFixed(1)}`]));
    if (parts.length > 0) L.push(`time (s): ${parts.join(', ')}`);
  }
  for (const n of r.notes) L.push(`note: ${n}`);
  return L.join('\n');
}

/** The report's line: what was reordered, what it gained alone, and whether OUT has it. */
export function narrowReorderLine(r: NonNullable<Report['narrowReorder']>): string {
  const s = sitesSummary(r.sites);
  const what = `${r.sites.length} conv output(s) of ${s.channels} channel(s), which ORT's blocked layout pads to ${s.padded}, reordered before their readers (${s.readers})`;
  if (r.speedup === undefined) return `narrow reorder: ${what}: ${r.why}, so OUT does not have it`;
  const t = `the model before rewriting ran ${r.originalMs!.toFixed(1)} -> ${r.reorderedMs!.toFixed(1)} ms with that alone (${r.speedup.toFixed(2)}x, ${r.runs} runs each)`;
  return r.kept
    ? `narrow reorder: ${what}: ${t}, so OUT has it too (exact; part of the speed-up above; --no-narrow-reorder leaves it out)`
    : `narrow reorder: ${what}: ${t}, ${r.why}, so OUT does not have it`;
}

/** One line on how much room the model has: what share of its time low-rank rewrites can touch. */
export function roomLine(room: Room): string {
  const pct = (100 * room.rewritableShare).toFixed(0);
  const bound = Number.isFinite(room.bound) ? `${room.bound.toFixed(2)}x` : 'no bound';
  return `room: dense convs, 1x1 convs and Gemm/MatMul take ${pct}% of the original's ${room.basis === 'time' ? 'kernel time' : 'layer MACs'}, so no low-rank rewrite can make it more than ${bound} faster (onnx-lr inspect shows the split)`;
}
