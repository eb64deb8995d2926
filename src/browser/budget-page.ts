/**
 * An error budget in the page (`--max-error …` with calibration images): the stages
 * optimize/pipeline.ts runs between learning shapes and writing, on the page's bytes —
 * the model's signature, the calibration set, the original's outputs on it, the layers'
 * input statistics and anchored fitting (data-aware, the CLI's defaults), then
 * optimize/budget-run.ts's runBudgeted as it is. ORT is ONNX Runtime Web here; the GEMMs
 * of the statistics run in it (the CLI's in ORT-node), so data-aware results agree with the
 * CLI's within float32 rounding, and bit for bit without data awareness.
 *
 * runBudgeted restarts from the original model after each allocation by reading its path:
 * the page holds the dropped bytes there (src/browser/node/fs.ts holdFile).
 */
import { calibrationSource } from '../api/data.js';
import { sampledPatchesNote } from '../calib/stats.js';
import { LrError } from '../errors.js';
import type { ModelSummary } from '../graph/summary.js';
import type { ShapeMap } from '../graph/shapes.js';
import type { GemmEngine } from '../linalg/engine.js';
import { createOrtGemmEngine } from '../linalg/ort-gemm.js';
import type { AnchorInputs } from '../optimize/anchored.js';
import { runBudgeted, type BudgetOutcome } from '../optimize/budget-run.js';
import { eligibleLayers } from '../optimize/budgeted.js';
import type { RunContext } from '../optimize/driver.js';
import type { CalibrationSource, Job, PipelineConfig } from '../optimize/job.js';
import { pickOutputs, runAll } from '../optimize/output-error.js';
import { timed } from '../optimize/timings.js';
import { createFitCache } from '../rewrite/fit-cache.js';
import { createSession, type ValueInfo } from '../verify/session.js';
import { imageCalibration, type PageImage, type PageImageOptions } from './calib-images.js';

export interface PageCalibration extends Omit<PageImageOptions, 'shapes' | 'values' | 'seed'> {
  images: readonly PageImage[];
}

export interface PageBudgetInputs {
  input: Uint8Array;
  shapes: ShapeMap;
  before: ModelSummary;
  calibration?: PageCalibration;
  run: RunContext;
}

export interface PageBudgetOutcome extends BudgetOutcome {
  /** The calibration set, said in the report. */
  calibration: string;
}

async function modelInputs(bytes: Uint8Array): Promise<ValueInfo[]> {
  const s = await createSession({ bytes }, { graphOptimizationLevel: 'disabled' });
  if (!s.ok) throw s.error;
  const inputs = [...s.value.inputs];
  await s.value.release();
  return inputs;
}

export async function runPageBudget(job: Job, cfg: PipelineConfig, inp: PageBudgetInputs): Promise<PageBudgetOutcome> {
  if (!cfg.budget) throw new LrError('usage', 'runPageBudget needs a budget');
  if (!inp.calibration || inp.calibration.images.length === 0) {
    throw new LrError('usage', 'an error budget in the page needs calibration images: choose a folder of .png/.jpg images (or several images)');
  }
  cfg.onStage?.('reading calibration images');
  const inputs = await modelInputs(inp.input);
  const { images, ...imageOpts } = inp.calibration;
  const cal = await imageCalibration(images, inputs, { ...imageOpts, shapes: cfg.shapes, values: cfg.values, seed: cfg.opts.seed });
  const calib: CalibrationSource = calibrationSource(cal.set, cal.description);
  const ref = await runAll({ bytes: inp.input }, calib.feeds);
  if (!ref.ok) throw ref.error;
  const reference = pickOutputs(ref.value, cfg.outputs);

  const notes: string[] = [];
  // As the CLI: the statistics of every layer that may be rewritten, on the model as it stands.
  const collect = cfg.dataAware ? calib.collectStats : undefined;
  const collectStats = collect && ((stage: string) => {
    cfg.onStage?.(stage);
    const names = eligibleLayers(job.model, inp.shapes, job.opts).map((l) => l.name);
    return timed(job.timings, 'statistics', () => collect(job.loaded, names, (done, total) => cfg.onProgress?.(done, total, 'calibration run'), inp.shapes));
  });
  const stats = await collectStats?.('collecting layer input statistics');
  if (stats) notes.push(`data-aware decomposition: input statistics for ${stats.size} layer(s)`, ...sampledPatchesNote(stats));
  let statsEngine: GemmEngine | undefined;
  try {
    let anchor: AnchorInputs | undefined;
    if (collectStats && cfg.anchor !== false) {
      statsEngine = createOrtGemmEngine();
      anchor = { feeds: calib.feeds, external: job.loaded.external, engine: statsEngine, onStage: cfg.onStage, onProgress: cfg.onProgress };
    }
    const run: RunContext = { ...inp.run, stats, ...(stats && { fits: createFitCache() }) };
    const r = await runBudgeted(job, cfg, { budget: cfg.budget, shapes: inp.shapes, before: inp.before, calib, reference, collectStats, anchor, run });
    return { ...r, notes: [...notes, ...r.notes], calibration: calib.description };
  } finally {
    await statsEngine?.dispose();
  }
}
