/** What calibration data is: the options it is loaded with, where it came from, and the set of feeds (see load.ts). */
import type { ShapeOverrides, ValueOverrides } from '../verify/inputs.js';
import type { ValueInfo } from '../verify/session.js';
import type { Feeds } from '../verify/tensor.js';
import type { Layout } from './image.js';

/** Samples read when `samples` is not given. */
export const DEFAULT_CALIB_SAMPLES = 64;
/** Samples per feed when the batch axis is dynamic. */
export const DEFAULT_CALIB_BATCH = 8;
/** Feeds of random data when no calibration data is given. */
export const DEFAULT_RANDOM_SAMPLES = 8;

export interface CalibOptions {
  /** The model's inputs, from an ORT session (`session.inputs`). */
  inputs: readonly ValueInfo[];
  /** At most this many samples are read (default 64). */
  samples?: number;
  /** Samples per feed when the batch axis is dynamic (default 8; 1 = no batching). */
  batch?: number;
  /** Image size [height, width]; default the input's static (or `shapes`) H×W. */
  resize?: readonly [number, number];
  /** Per-channel mean, or one value for all (images only; default 0). */
  mean?: readonly number[];
  /** Per-channel std, or one value for all (images only; default 1). */
  std?: readonly number[];
  /** Image tensor layout (default 'nchw'). */
  layout?: Layout;
  /** Dims of the inputs that are not calibrated; H×W for images. */
  shapes?: ShapeOverrides;
  /** Fixed values of inputs that are not calibrated (e.g. a sample rate). */
  values?: ValueOverrides;
  /** Seed of the random data of inputs that are neither calibrated nor fixed (default 0). */
  seed?: number;
  /** Bound on each file read, each archive's decoded arrays and each decoded image, bytes (default 1 GiB). */
  maxBytes?: number;
  /** What the data is for, in messages about the files (default 'calibration'). */
  purpose?: string;
}

export type CalibSource =
  | { kind: 'random'; seed: number }
  | { kind: 'npy' | 'npz'; path: string }
  | { kind: 'arrays'; path: string; files: number }
  | {
    kind: 'images'; path: string; files: number; height: number; width: number; channels: number;
    mean: number[]; std: number[]; layout: Layout;
  };

export interface CalibSet {
  readonly source: CalibSource;
  /** Samples used (data rows, images or random feeds). */
  readonly samples: number;
  /** Feeds (model runs) per pass over the data. */
  readonly batches: number;
  /** Largest number of samples in one feed. */
  readonly batchSize: number;
  /** Inputs whose values come from the data ([] for random calibration). */
  readonly calibrated: readonly string[];
  /** Inputs given a fixed value. */
  readonly fixed: readonly string[];
  /** Inputs filled with seeded random data. */
  readonly random: readonly string[];
  /** Things the report should mention (dropped samples, defaulted dims). */
  readonly notes: readonly string[];
  /**
   * The feeds, in a fixed order; every call starts over (statistics may take several
   * passes). Tensors can be shared between feeds and calls: treat them as read-only.
   */
  feeds(): Generator<Feeds>;
}
