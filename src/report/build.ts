/**
 * The optimize report, assembled once from what the stages of a run returned: nothing else
 * writes into a Report. What follows from the parts (OUT's MACs, the warnings about
 * non-finite weights, an unmet budget and a slower OUT) is derived here, in one place.
 */
import type { ModelSummary } from '../graph/summary.js';
import type { Room } from '../graph/room.js';
import { slowerWarning, type LatencyStats } from '../verify/latency.js';
import type { LayerRecord, LayerSensitivity } from './records.js';
import type { ModelSide, Report } from './report.js';
import { calibrationKindOf, calibrationSamplesOf, policyKindOf, SCHEMA_VERSION, skipCodeOf, unitKindOf } from './kinds.js';

/** What writing OUT and checking it in ORT measured. */
export interface Measured {
  /** OUT's size: protobuf plus external data. */
  bytes: number;
  verify?: Report['verify'];
  /** How the verification inputs were made. */
  inputs?: string;
  latency?: LatencyStats;
  latencyWeb?: LatencyStats;
  /** What could not be measured, and why. */
  notes: readonly string[];
}

export interface ReportParts {
  tool: string;
  seed: number;
  policy: string;
  input: ModelSide;
  /** OUT's path ('' when nothing is written) and the rewritten model's summary. */
  output: { file: string; summary: ModelSummary };
  layers: LayerRecord[];
  seconds: number;
  timings: NonNullable<Report['timings']>;
  room?: Room;
  /** The run's notes up to the rewrite, in the order they were made. */
  notes: readonly string[];
  calibration?: string;
  budget?: Report['budget'];
  sensitivity?: LayerSensitivity[];
  /** Absent when nothing was written (the plan command). */
  written?: Measured;
  weights?: Report['weights'];
  narrowReorder?: Report['narrowReorder'];
}

export function buildReport(p: ReportParts): Report {
  const output: ModelSide = { file: p.output.file, bytes: p.written?.bytes ?? 0, ...p.output.summary };
  // OUT's summary has no layer shapes to count MACs with: the records say what each layer costs now.
  if (p.input.macs !== undefined) output.macs = p.layers.reduce((a, l) => a + (l.macsAfter ?? 0), 0);
  const nonFinite = p.layers.filter((l) => l.skipped && /NaN|non-finite|infinite/i.test(l.reason ?? ''));
  const notes = [
    ...p.notes,
    ...(nonFinite.length > 0 ? [`warning: ${nonFinite.length} layer(s) skipped for NaN/Inf in their weights: ${nonFinite.map((l) => l.name).join(', ')}`] : []),
    ...(p.written?.notes ?? []),
    // Said once OUT is written and measured (a latency budget is settled on OUT's timing); the plan command's budget says it.
    ...(p.written && p.budget && !p.budget.met ? [`budget not met: ${p.budget.why}`] : []),
    // A compressed model that runs slower is no gain: kept in the report (the CLI also says it on stderr).
    ...[p.written?.latency, p.written?.latencyWeb].flatMap((l) => {
      const slow = l && slowerWarning(l);
      return slow ? [`warning: ${slow}`] : [];
    }),
  ];
  const little = littleGainNote(p, output);
  if (little) notes.push(little);
  const w = p.written;
  // The enums beside the prose (report/kinds.ts): derived once here, for machines.
  const layers = p.layers.map((l) => (l.skipped ? { ...l, skipCode: skipCodeOf(l.reason ?? '') } : l));
  const calibration = p.calibration === undefined ? {} : {
    calibration: p.calibration, calibrationKind: calibrationKindOf(p.calibration),
    ...(calibrationSamplesOf(p.calibration) !== undefined && { calibrationSamples: calibrationSamplesOf(p.calibration) }),
  };
  const budget = p.budget && { ...p.budget, unitKind: unitKindOf(p.budget.unit) };
  return {
    schemaVersion: SCHEMA_VERSION, tool: p.tool, seed: p.seed, policy: p.policy, policyKind: policyKindOf(p.policy),
    input: p.input, output, layers, seconds: p.seconds, timings: p.timings,
    ...(p.room && { room: p.room }), ...(p.narrowReorder && { narrowReorder: p.narrowReorder }), notes, ...calibration, ...(budget && { budget }), ...(p.sensitivity && { sensitivity: p.sensitivity }), ...(p.weights && { weights: p.weights }),
    ...(w?.verify && { verify: w.verify }), ...(w?.inputs !== undefined && { inputs: w.inputs }),
    ...(w?.latency && { latency: w.latency }), ...(w?.latencyWeb && { latencyWeb: w.latencyWeb }),
  };
}

/** A run that gains under this share of params and of latency gets a note on what to try. */
const LITTLE_GAIN = 0.05;

/**
 * One line when a written model gains little (< 5% of the params and of the latency):
 * what to try, or why there is no room (the bound from where the time goes, graph/room.ts).
 */
function littleGainNote(p: ReportParts, output: ModelSide): string | undefined {
  if (!p.written || p.input.params <= 0) return undefined;
  const paramsSaved = 1 - output.params / p.input.params;
  const lat = p.written.latency;
  const timeSaved = lat ? 1 - lat.optimizedMs.p50 / lat.originalMs.p50 : paramsSaved;
  if (paramsSaved >= LITTLE_GAIN || timeSaved >= LITTLE_GAIN) return undefined;
  const gained = `this run saved ${(100 * Math.max(paramsSaved, 0)).toFixed(1)}% of the params${lat ? ` and ${(100 * Math.max(timeSaved, 0)).toFixed(1)}% of the latency` : ''}`;
  const room = p.room;
  if (room && Number.isFinite(room.bound) && room.bound < 1 / (1 - LITTLE_GAIN)) {
    return `${gained}: the model has little room (the layers low-rank rewrites can shrink take ${(100 * room.rewritableShare).toFixed(0)}% of its ${room.basis === 'time' ? 'time' : 'MACs'}, so at most ${room.bound.toFixed(2)}x faster)`;
  }
  if (p.budget) return `${gained}: a tighter budget (a lower --target-*, or a looser --max-error) trades more accuracy for size`;
  return `${gained}: the per-layer default keeps 99.9% of each weight's energy; try a budget with calibration data, e.g. --target-latency 0.8 --calib DIR (or --max-error cosine:0.995 --calib DIR)`;
}
