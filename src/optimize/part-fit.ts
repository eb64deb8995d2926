/**
 * The independent fits' own lean toward the calibration data: an allocation fitted on the
 * statistics of a part of the data only (left-out.ts), whose outputs on every feed show
 * how much worse such a fit does on inputs it did not see than on those it did.
 *
 * Why: a budget's margin for unseen inputs is estimated from the spread of the error over
 * the calibration samples (output-error.ts errBound), which cannot see a fit's lean toward
 * them. PP-OCRv4 rec, 8 samples: the independent fits came out 1.16–1.26× worse (rel. L2)
 * on new samples than on their own, and the held-out error passed the judged bound in 2
 * runs of 6. budget-run.ts widens each allocation's bound by its lean (one statistics pass
 * over the part, and one more fit per allocation; on models whose fits take minutes, the
 * first allocation's lean stands for all). The output weights the fits use
 * (output-sensitivity.ts) stay those measured on all the data, so the part's fit leans a
 * little less than one made from the part alone would.
 */
import type { LayerInputStats } from '../rewrite/pass.js';
import type { HostTensor } from '../verify/tensor.js';
import type { LeftOut } from './left-out.js';
import type { PlanFile } from './plan.js';

type Outputs = Record<string, HostTensor>[];

export interface PartFitSteps {
  /** Statistics of `layers` over `feeds` (calibration runs of the model as it stands). */
  collect(layers: readonly string[], feeds: LeftOut['fitFeeds']): Promise<ReadonlyMap<string, LayerInputStats>>;
  /** Applies the plan independently with these statistics; the outputs on every calibration feed (undefined when ORT cannot run the result). */
  apply(stats: ReadonlyMap<string, LayerInputStats>): Promise<Outputs | undefined>;
}

/** The outputs of `plan` fitted independently on the part of the calibration data `split` fits on. */
export async function fitOnPart(plan: PlanFile, split: LeftOut, steps: PartFitSteps): Promise<Outputs | undefined> {
  const layers = plan.layers.filter((l) => !l.skipped).map((l) => l.name);
  if (layers.length === 0) return undefined;
  return steps.apply(await steps.collect(layers, split.fitFeeds));
}
