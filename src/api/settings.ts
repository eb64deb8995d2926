/**
 * What a caller may ask of `optimize` and `plan`, typed: each field is the command-line
 * option of the same name (`rankRatio` is --rank-ratio, `dataAware: false` is
 * --no-data-aware), with the same default (src/api/defaults.ts), and error messages name
 * the option as the command line spells it.
 */
import type { MethodChoice } from '../optimize/driver.js';
import type { PlanFile } from '../optimize/plan.js';
import type { ShapeOverrides, ValueOverrides } from '../verify/inputs.js';

export interface OptimizeSettings {
  /** Rank policy, at most one of: energy (default 0.999), rankRatio, vbmf, rank. */
  energy?: number;
  rankRatio?: number;
  vbmf?: boolean;
  rank?: number;
  /** Round candidate ranks up to a multiple of this (default 16 where latency counts, else 1). */
  align?: number;
  method?: MethodChoice;
  /** Layers whose node or weight name matches are left alone (a string is a regular expression). */
  exclude?: RegExp | string;
  minParams?: number;
  heaviest?: number;
  seed?: number;
  /** Decisions to apply as given (a plan or a report from an earlier run), or its path. */
  plan?: PlanFile | string;

  /** Budget, at most one of: fractions of the original kept, or an output error (0.1, 'cosine:0.99', 'top1:0.99'). */
  targetParams?: number;
  targetMacs?: number;
  targetLatency?: number;
  maxError?: number | string;
  /** What an error budget (or a run without one) saves; default latency when latency is measured. */
  save?: 'params' | 'macs' | 'latency';
  stages?: number;
  /** The outputs that matter: budgets, sensitivity and the verdict judge only these. */
  outputs?: readonly string[];
  layerLatency?: boolean;
  measureAllRungs?: boolean;
  /** Budgets under auto: sensitivity offers the other methods' rungs too (--all-methods). */
  allMethods?: boolean;
  /** Flops a fit made only to compare methods may cost (--compare-limit; default COMPARE_WORK, rewrite/challenge.ts). */
  compareLimit?: number;
  /** Default true (false: --no-data-aware). */
  dataAware?: boolean;
  /** Default true (false: --no-anchor). */
  anchor?: boolean;
  /** Default false (true: --activation-fit): convs read by a Relu/Clip alone are refitted through it (anchored fits, or independent ones with anchor false); needs calibration data. */
  activationFit?: boolean;
  /** Steps of a refit of every new factor to the original's outputs on the calibration data (--refine; default 0: none; optimize/refine.ts). */
  refine?: number;
  /**
   * With calibration data, SVD-pair layers weight each output channel by how much the
   * judged outputs move with it. Default: from gradients (backward runs in ORT), layers
   * they cannot reach unweighted; true (--output-aware): those measured by finite
   * differences too (slower); false (--no-output-aware): no weights.
   */
  outputAware?: boolean;
  /** Default true (false: --no-narrow-reorder): narrow conv outputs reordered out of ORT's blocked layout when that is measured faster. */
  narrowReorder?: boolean;
  /** 'float32' (--compute float32): a float16 graph made to compute in float32 first; OUT is still compared with IN. */
  compute?: 'float32';

  /** Concrete dims for dynamic inputs, e.g. { x: [1, 3, 48, 320] }. */
  shapes?: ShapeOverrides;
  /** Fixed input values (e.g. a sample-rate scalar). */
  values?: ValueOverrides;

  /** Calibration data: a .npy/.npz file or a folder of them or of images. */
  calib?: string;
  calibSamples?: number;
  /** Held-out verification data, read like `calib`. */
  verifyData?: string;
  verifySamples?: number;
  /** Image options for `calib` and `verifyData`. */
  resize?: readonly [number, number];
  mean?: readonly number[];
  std?: readonly number[];
  layout?: 'nchw' | 'nhwc';
  /** Largest side input (calibration file, decoded image, plan), MiB; default 1024. */
  maxInputMb?: number;

  /** Default true (false: --no-verify). */
  verify?: boolean;
  /** Default true (false: --no-latency). */
  latency?: boolean;
  minCosine?: number;
  atol?: number;
  rtol?: number;
  threads?: number;
  /** ORT threads of the runs that only compute values (statistics, errors), not of timings; default 1. */
  workThreads?: number;
  /** Bytes the run may use (the CLI: --max-memory, else 85% of the machine's memory); --refine holds its optimizer's state to a quarter of it. Default: the machine's memory. */
  maxMemoryBytes?: number;
  /** Also time both models in onnxruntime-web (an optional peer dependency). */
  benchWeb?: boolean;
  /** Allow the output to be the input file. */
  force?: boolean;
  externalData?: boolean;
  /** How the new factors are stored: fp32 (default), fp16 (behind a Cast) or int8 (per-channel DequantizeLinear). */
  weights?: 'fp32' | 'fp16' | 'int8';

  onProgress?: (done: number, total: number, layer: string) => void;
  onStage?: (stage: string) => void;
}
