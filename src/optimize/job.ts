/**
 * What an optimize run is given and what it hands from stage to stage: the run's
 * configuration (from the CLI or a library caller), its calibration and verification
 * inputs, and the job the stages share (the model being rewritten and the phase timings).
 * Types only, owned here so the stages (budget-run, write-verify) and the pipeline that
 * calls them do not import each other.
 */
import type { Model } from '../graph/graph.js';
import type { LoadedModel } from '../onnx/file.js';
import type { LayerSensitivity } from '../report/records.js';
import type { Report } from '../report/report.js';
import type { LayerInputStats } from '../rewrite/pass.js';
import type { ShapeOverrides, ValueOverrides } from '../verify/inputs.js';
import type { ValueInfo } from '../verify/session.js';
import type { Feeds } from '../verify/tensor.js';
import type { InputPath } from '../util/output-paths.js';
import type { Budget } from './budget.js';
import type { OptimizeOptions, RunContext } from './driver.js';
import type { Timings } from './timings.js';
import type { WeightsMode } from '../rewrite/quantize-factors.js';

export interface Job {
  inPath: string;
  loaded: LoadedModel;
  model: Model;
  /**
   * IN loaded anew, for the stages that restart from the original (an error budget, after
   * each allocation). Default: IN's file read again; the page, which holds IN as bytes
   * (browser/optimize-bytes.ts), decodes them again.
   */
  reload?: () => LoadedModel;
  /**
   * The user's IN when the run works on a converted copy (`inPath`; --compute float32): OUT
   * is verified and timed against it, and may not replace it or its data files (nor remove
   * them as unused), as if it were the input.
   */
  original?: { path: string; inputs: readonly InputPath[] };
  /** As the user gave them: the runtime handles travel apart (driver.ts RunContext). */
  readonly opts: OptimizeOptions;
  /** Seconds per phase, filled as the stages run. */
  timings: Timings;
}

/** Statistics of the layers a run may rewrite over the calibration feeds; `part`: of these layers over these feeds only. */
export type CollectStats = (stage: string, part?: { layers: readonly string[]; feeds: readonly Feeds[] }) => Promise<ReadonlyMap<string, LayerInputStats>>;

export interface CalibrationSource {
  /** Feeds for the model's inputs (batches). */
  feeds: readonly Feeds[];
  /** Said in the report: what the calibration inputs were. */
  description: string;
  /** Per-layer input statistics, when data-aware decomposition is on. */
  collectStats?: (
    model: LoadedModel, layerNames: readonly string[], onProgress?: (done: number, total: number) => void,
    /** Dims already learned (calib/stats-plan.ts StatsOptions.knownShapes). */
    knownShapes?: ReadonlyMap<string, readonly number[]>,
    /** Intra-op threads of the statistics runs (default 1). */
    threads?: number,
    /** Only these feeds (a part of `feeds`, budget-run.ts: the independent fit's lean); default all. */
    only?: readonly Feeds[],
  ) => Promise<ReadonlyMap<string, LayerInputStats>>;
}

export interface PipelineConfig {
  /** What the user asked for (never written to). */
  readonly opts: OptimizeOptions;
  budget?: Budget;
  /**
   * Intra-op threads of the ORT runs that only compute values (statistics, errors,
   * references); timings use verify.threads, the deployment's. Default 1.
   */
  workThreads?: number;
  /** Bytes the run may use (the worker's limit); default the machine's memory. */
  maxMemoryBytes?: number;
  /** For error budgets: what to save. */
  budgetUnit?: 'params' | 'macs' | 'latency';
  shapes: ShapeOverrides;
  values: ValueOverrides;
  /** The outputs that matter (--outputs): budgets, sensitivity and verification judge only these. */
  outputs?: readonly string[];
  /** Calibration inputs; random seeded inputs are made when a budget needs data and none is given. */
  calibration?: (inputs: ValueInfo[]) => Promise<CalibrationSource>;
  dataAware: boolean;
  /**
   * Anchored sequential fitting (optimize/anchored.ts) when data-aware with calibration
   * statistics: each layer fitted to the original's outputs given what the partly
   * compressed model feeds it. Default on; false fits every layer independently (as before).
   */
  anchor?: boolean;
  /** Anchored convs read by a Relu/Clip alone refitted through it (optimize/flat-refit.ts); default false. */
  activationFit?: boolean;
  /** Steps of the refit of every new factor to the original's judged outputs (optimize/refine.ts); 0 or undefined: none. */
  refine?: number;
  /**
   * SVD pairs' fits weighted per output channel by the judged outputs' sensitivity
   * (optimize/output-sensitivity.ts), with calibration statistics: 'gradients' (the
   * default) from backward runs only, the layers they cannot reach unweighted; true also
   * measures those by finite differences; false weights nothing.
   */
  outputAware?: boolean | 'gradients';
  /**
   * Time the original with its narrow conv outputs reordered out of ORT's blocked layout
   * (optimize/narrow-reorder.ts) and give OUT the same when faster. Only when latency is
   * measured and is what the run saves; default on, false: --no-narrow-reorder.
   */
  narrowReorder?: boolean;
  /** --compute float32: a float16 graph is made to compute in float32 before anything else (optimize/float32-work.ts). */
  computeFloat32?: boolean;
  /** Reach the budget in this many stages, merging and re-splitting factored layers (default 1). */
  stages?: number;
  /** Time candidate rewrites layer by layer and keep only those measured faster (always on for latency budgets). */
  layerLatency?: boolean;
  /** Budgets: run every candidate rank of every layer through the model in ORT instead of predicting most (--measure-all-rungs). */
  measureAllRungs?: boolean;
  /** Budgets under auto: sensitivity offers the rungs of every method competing for a layer (--all-methods). */
  allMethods?: boolean;
  /**
   * Without a budget or a plan: time each rewrite the policy decides against its layer in
   * ORT (verify.threads) and keep only those measured faster (latency-screen.ts). The CLI
   * turns it on unless --save params|macs; default off for library callers.
   */
  latencyScreen?: boolean;
  /** Defaults the caller chose for the user, said first in the report's notes. */
  defaults?: readonly string[];
  verify: {
    enabled: boolean; minCosine: number; atol?: number; rtol?: number; threads: number; latency: boolean; web: boolean;
    /** Held-out inputs to compare on instead of seeded random ones (--verify-data). */
    data?: (inputs: ValueInfo[]) => VerificationData;
  };
  save: { force: boolean; externalData: boolean };
  /** --weights: how the new factors are stored in OUT (default fp32, as the rewrite made them). */
  weights?: WeightsMode;
  onProgress?: RunContext['onProgress'];
  onStage?: (stage: string) => void;
  /** Called once IN is loaded, before any work: e.g. to check the outputs against the files IN reads. */
  onLoaded?: (loaded: LoadedModel) => void;
}

export interface VerificationData {
  feeds: readonly Feeds[];
  description: string;
  /** The shapes learned at batch 1, so a feed holding several samples reports its worst one (VerifyOptions.learned). */
  learned?: ReadonlyMap<string, readonly number[]>;
}

export interface PipelineResult {
  report: Report;
  pass: boolean;
  /** Sensitivity measurements of a budgeted run (cached in plan files). */
  sensitivity?: LayerSensitivity[];
}
