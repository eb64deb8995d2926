/**
 * Calibration and held-out verification data (calib, verifyData and the image options) as
 * the pipeline reads them: typed settings in, loaders out. The command line parses its
 * flags into these settings (cli/calibration.ts), so both read data alike.
 */
import { collectStats } from '../calib/stats.js';
import { describeCalibration, loadCalibration, type CalibSet } from '../calib/load.js';
import type { CalibrationSource } from '../optimize/job.js';
import { LrError } from '../errors.js';
import { Model } from '../graph/graph.js';
import { findLayers } from '../graph/layers.js';
import { createOrtGemmEngine } from '../linalg/ort-gemm.js';
import { DEFAULT_MAX_INPUT_BYTES, limitText, showBytes } from '../util/bounds.js';
import type { ShapeOverrides, ValueOverrides } from '../verify/inputs.js';
import type { Feeds } from '../verify/tensor.js';
import { checkNumber } from './check.js';
import type { RunHooks } from './config.js';
import { DEFAULT_VERIFY_SAMPLES } from './defaults.js';
import type { OptimizeSettings } from './settings.js';

export type DataSettings = Pick<OptimizeSettings, 'calib' | 'calibSamples' | 'verifyData' | 'verifySamples' | 'resize' | 'mean' | 'std' | 'layout' | 'maxInputMb'>;

/** The bound on each side-input file, decoded archive and decoded image (calibration and verification data, plans); default 1 GiB. */
export function maxInputBytes(s: Pick<DataSettings, 'maxInputMb'>): number {
  const mb = checkNumber('max-input-mb', s.maxInputMb, { min: 1, max: 2 ** 32, integer: true });
  return mb === undefined ? DEFAULT_MAX_INPUT_BYTES : mb * 2 ** 20;
}

type ImageOptions = Pick<DataSettings, 'resize' | 'mean' | 'std' | 'layout'>;

/** The image options, checked: a resize that fits the input bound, finite mean/std lists, a known layout. */
function imageOptions(s: DataSettings): { resize?: [number, number]; mean?: number[]; std?: number[]; layout?: 'nchw' | 'nhwc' } {
  let resize: [number, number] | undefined;
  if (s.resize !== undefined) {
    const [h, w] = s.resize;
    if (s.resize.length !== 2 || !Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) throw new LrError('usage', `--resize expects HxW (e.g. 224x224), got "${s.resize.join('x')}"`);
    resize = [h, w];
    // Each sample is a float32 array of 3 planes of this size (before a luminance input keeps one).
    const max = maxInputBytes(s);
    if (h * w * 12 > max) throw new LrError('usage', `--resize ${h}x${w}: an image of that size takes ${showBytes(h * w * 12)} as float32, over the ${limitText(max)}`);
  }
  const list = (name: 'mean' | 'std'): number[] | undefined => {
    const v = s[name];
    if (v === undefined) return undefined;
    if (v.length === 0 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) throw new LrError('usage', `--${name} expects comma-separated numbers (e.g. 0.485,0.456,0.406), got "${v.join(',')}"`);
    return [...v];
  };
  if (s.layout !== undefined && s.layout !== 'nchw' && s.layout !== 'nhwc') throw new LrError('usage', `--layout expects nchw or nhwc, got "${String(s.layout)}"`);
  return { resize, mean: list('mean'), std: list('std'), layout: s.layout };
}

/**
 * A calibration set as the pipeline takes it: its feeds, and the layers' input statistics
 * measured on them. The page (src/browser/) builds its set from dropped images and uses this too.
 */
export function calibrationSource(set: CalibSet, description = describeCalibration(set)): CalibrationSource {
  return {
    feeds: [...set.feeds()],
    description,
    collectStats: async (loaded, names, onProgress, knownShapes, threads, only) => {
      const model = new Model(loaded.model);
      const wanted = new Set(names);
      const layers = findLayers(model).filter((l) => wanted.has(l.name));
      // Patch second moments (k×k convs) let the chains' last factor be refitted; their
      // products run in ORT's GEMM, which makes high-resolution convs affordable.
      const engine = createOrtGemmEngine();
      try {
        const r = await collectStats(model, layers, only ? partOf(set, only) : set, { external: loaded.external, engine, onProgress, knownShapes, ...(threads && { session: { intraOpNumThreads: threads, spinning: false } }) });
        if (!r.ok) throw r.error;
        return r.value.stats;
      } finally {
        await engine.dispose();
      }
    },
  };
}

/** `set` restricted to `feeds` (some of its own), for statistics over a part of it. */
function partOf(set: CalibSet, feeds: readonly Feeds[]): CalibSet {
  const samples = feeds.reduce((n, f) => n + Math.max(...Object.values(f).map((t) => t.dims[0] ?? 1), 1), 0);
  return {
    source: set.source, samples, batches: feeds.length, batchSize: set.batchSize, calibrated: set.calibrated, fixed: set.fixed, random: set.random, notes: set.notes,
    *feeds() { yield* feeds; },
  };
}

/** The data readers the settings ask for (checked first: a sample count or image option needs its data). */
export function dataHooks(s: DataSettings, shapes: ShapeOverrides, values: ValueOverrides, seed: number): Pick<RunHooks, 'calibration' | 'verificationData'> {
  if (s.calib === undefined && s.calibSamples !== undefined) throw new LrError('usage', '--calib-samples needs --calib');
  if (s.verifyData === undefined && s.verifySamples !== undefined) throw new LrError('usage', '--verify-samples needs --verify-data');
  if (s.calib === undefined && s.verifyData === undefined) {
    const image: (keyof ImageOptions)[] = ['resize', 'mean', 'std', 'layout'];
    const given = image.find((k) => s[k] !== undefined);
    if (given) throw new LrError('usage', `--${given} needs --calib or --verify-data`);
  }
  const img = imageOptions(s);
  const maxBytes = maxInputBytes(s);
  const calibSamples = checkNumber('calib-samples', s.calibSamples, { min: 1, max: 1_000_000, integer: true });
  const verifySamples = checkNumber('verify-samples', s.verifySamples, { min: 1, max: 1_000_000, integer: true }) ?? DEFAULT_VERIFY_SAMPLES;
  const calibPath = s.calib, heldPath = s.verifyData;
  return {
    calibration: calibPath === undefined ? undefined : async (inputs) => {
      const set = loadCalibration(calibPath, { inputs, samples: calibSamples, ...img, shapes, values, seed, maxBytes });
      if (!set.ok) throw set.error;
      return calibrationSource(set.value);
    },
    verificationData: heldPath === undefined ? undefined : (inputs) => {
      const set = loadCalibration(heldPath, { inputs, samples: verifySamples, ...img, shapes, values, seed, maxBytes, purpose: 'verification' });
      if (!set.ok) throw set.error;
      return { feeds: [...set.value.feeds()], description: `held out: ${describeCalibration(set.value)}` };
    },
  };
}
