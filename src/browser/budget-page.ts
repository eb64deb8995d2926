/**
 * An error budget in the page (`--max-error …` with calibration images): the stages
 * optimize/pipeline.ts runs between learning shapes and writing, on the page's bytes —
 * prepareRewrite (the calibration set, the original's outputs on it, the layers' input
 * statistics and anchored fitting, data-aware as the CLI's defaults) with the page's
 * images as the calibration, then optimize/budget-run.ts's runBudgeted as it is. ORT is
 * ONNX Runtime Web here; the GEMMs of the statistics run in it (the CLI's in ORT-node), so
 * data-aware results agree with the CLI's within float32 rounding, and bit for bit without
 * data awareness. runBudgeted restarts from the original through the job's `reload`, which
 * decodes the page's bytes again (browser/optimize-bytes.ts).
 */
import { calibrationSource } from '../api/data.js';
import { LrError } from '../errors.js';
import type { ModelSummary } from '../graph/summary.js';
import type { ShapeMap } from '../graph/shapes.js';
import { runBudgeted, type BudgetOutcome } from '../optimize/budget-run.js';
import type { RunContext } from '../optimize/driver.js';
import type { Job, PipelineConfig } from '../optimize/job.js';
import { prepareRewrite } from '../optimize/pipeline.js';
import { imageCalibration, type PageImage, type PageImageOptions } from './calib-images.js';

export interface PageCalibration extends Omit<PageImageOptions, 'shapes' | 'values' | 'seed'> {
  images: readonly PageImage[];
}

export interface PageBudgetInputs {
  input: Uint8Array;
  shapes: ShapeMap;
  before: ModelSummary;
  calibration?: PageCalibration;
  run: Omit<RunContext, 'stats' | 'fits'>;
}

export interface PageBudgetOutcome extends BudgetOutcome {
  /** The calibration set, said in the report. */
  calibration: string;
}

export async function runPageBudget(job: Job, cfg: PipelineConfig, inp: PageBudgetInputs): Promise<PageBudgetOutcome> {
  if (!cfg.budget) throw new LrError('usage', 'runPageBudget needs a budget');
  if (!inp.calibration || inp.calibration.images.length === 0) {
    throw new LrError('usage', 'an error budget in the page needs calibration images: choose a folder of .png/.jpg images (or several images)');
  }
  const { images, ...imageOpts } = inp.calibration;
  const pageCfg: PipelineConfig = {
    ...cfg,
    calibration: async (inputs) => {
      const cal = await imageCalibration(images, inputs, { ...imageOpts, shapes: cfg.shapes, values: cfg.values, seed: cfg.opts.seed });
      return calibrationSource(cal.set, cal.description);
    },
  };
  const prepared = await prepareRewrite(job, pageCfg, inp.shapes, { source: { bytes: inp.input }, verifying: false, run: inp.run });
  try {
    const { data, collectStats, anchor, run } = prepared;
    const r = await runBudgeted(job, pageCfg, { budget: cfg.budget, shapes: inp.shapes, before: inp.before, calib: data.calib!, reference: data.reference!, collectStats, anchor, run });
    return { ...r, notes: [...prepared.notes, ...r.notes], calibration: data.calib!.description };
  } finally {
    await prepared.statsEngine?.dispose();
  }
}
