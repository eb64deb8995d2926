/** A plan run's result as a plan file: the per-layer decisions, and a budget's measurements to reuse. */
import type { PipelineResult } from '../optimize/pipeline.js';
import { SCHEMA_VERSION } from '../report/kinds.js';
import type { PlanFile } from '../optimize/plan.js';

export function planFileOf(inPath: string, { report, sensitivity }: PipelineResult): PlanFile {
  return {
    schemaVersion: SCHEMA_VERSION, version: 1, model: inPath, fingerprint: report.input.fingerprint, policy: report.policy, layers: report.layers, ...(sensitivity && { sensitivity }),
  };
}
