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
  const w = p.written;
  return {
    tool: p.tool, seed: p.seed, policy: p.policy, input: p.input, output, layers: p.layers, seconds: p.seconds, timings: p.timings,
    ...(p.room && { room: p.room }), notes, calibration: p.calibration, budget: p.budget, ...(p.sensitivity && { sensitivity: p.sensitivity }),
    ...(w?.verify && { verify: w.verify }), ...(w?.inputs !== undefined && { inputs: w.inputs }),
    ...(w?.latency && { latency: w.latency }), ...(w?.latencyWeb && { latencyWeb: w.latencyWeb }),
  };
}
