/** --calib and its image options → a calibration source for the pipeline. */
import { findLayers } from '../graph/layers.js';
import { Model } from '../graph/graph.js';
import { LrError } from '../errors.js';
import { collectStats } from '../calib/stats.js';
import { describeCalibration, loadCalibration } from '../calib/load.js';
import { createOrtGemmEngine } from '../linalg/ort-gemm.js';
import type { CalibrationSource } from '../optimize/pipeline.js';
import { DEFAULT_MAX_INPUT_BYTES, limitText, showBytes } from '../util/bounds.js';
import type { ShapeOverrides, ValueOverrides } from '../verify/inputs.js';
import type { ValueInfo } from '../verify/session.js';
import type { Feeds } from '../verify/tensor.js';
import { num, str, type Parsed } from './args.js';

function numberList(p: Parsed, name: string): number[] | undefined {
  const s = str(p, name);
  if (s === undefined) return undefined;
  const v = s.split(',').map((x) => Number(x.trim()));
  if (v.length === 0 || v.some((x) => !Number.isFinite(x))) throw new LrError('usage', `--${name} expects comma-separated numbers (e.g. 0.485,0.456,0.406), got "${s}"`);
  return v;
}

/**
 * --max-input-mb: the bound on each side-input file, decoded archive and decoded image
 * (calibration and verification data, plans), in MiB; default 1 GiB.
 */
export function maxInputBytes(p: Parsed): number {
  const mb = num(p, 'max-input-mb', { min: 1, max: 2 ** 32, integer: true });
  return mb === undefined ? DEFAULT_MAX_INPUT_BYTES : mb * 2 ** 20;
}

/** Image options (--resize, --mean, --std, --layout), shared by --calib and --verify-data. */
function imageOptions(p: Parsed): { resize?: [number, number]; mean?: number[]; std?: number[]; layout?: 'nchw' | 'nhwc' } {
  const rs = str(p, 'resize');
  let resize: [number, number] | undefined;
  if (rs !== undefined) {
    const m = /^(\d+)x(\d+)$/.exec(rs.trim());
    if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new LrError('usage', `--resize expects HxW (e.g. 224x224), got "${rs}"`);
    resize = [Number(m[1]), Number(m[2])];
    // Each sample is a float32 array of 3 planes of this size (before a luminance input keeps one).
    const max = maxInputBytes(p);
    if (resize[0] * resize[1] * 12 > max) {
      throw new LrError('usage', `--resize ${resize[0]}x${resize[1]}: an image of that size takes ${showBytes(resize[0] * resize[1] * 12)} as float32, over the ${limitText(max)}`);
    }
  }
  const layout = str(p, 'layout');
  if (layout !== undefined && layout !== 'nchw' && layout !== 'nhwc') throw new LrError('usage', `--layout expects nchw or nhwc, got "${layout}"`);
  return { resize, mean: numberList(p, 'mean'), std: numberList(p, 'std'), layout: layout as 'nchw' | 'nhwc' | undefined };
}

/** Held-out inputs for verification (--verify-data), read like --calib, with the same image options. */
export function verificationDataFrom(p: Parsed, shapes: ShapeOverrides, values: ValueOverrides, seed: number):
  ((inputs: ValueInfo[]) => { feeds: Feeds[]; description: string }) | undefined {
  const path = str(p, 'verify-data');
  if (path === undefined) {
    if (p.values['verify-samples'] !== undefined) throw new LrError('usage', '--verify-samples needs --verify-data');
    return undefined;
  }
  const samples = num(p, 'verify-samples', { min: 1, max: 1_000_000, integer: true }) ?? DEFAULT_VERIFY_SAMPLES;
  const img = imageOptions(p);
  const maxBytes = maxInputBytes(p);
  return (inputs) => {
    const set = loadCalibration(path, { inputs, samples, ...img, shapes, values, seed, maxBytes, purpose: 'verification' });
    if (!set.ok) throw set.error;
    return { feeds: [...set.value.feeds()], description: `held out: ${describeCalibration(set.value)}` };
  };
}

/** Verification runs both models once per sample: enough to judge, bounded in time. */
export const DEFAULT_VERIFY_SAMPLES = 16;

export function calibrationFrom(p: Parsed, shapes: ShapeOverrides, values: ValueOverrides, seed: number):
  ((inputs: ValueInfo[]) => Promise<CalibrationSource>) | undefined {
  const path = str(p, 'calib');
  if (path === undefined) {
    if (p.values['calib-samples'] !== undefined) throw new LrError('usage', '--calib-samples needs --calib');
    if (str(p, 'verify-data') === undefined) {
      for (const k of ['resize', 'mean', 'std', 'layout']) {
        if (p.values[k] !== undefined) throw new LrError('usage', `--${k} needs --calib or --verify-data`);
      }
    }
    return undefined;
  }
  const samples = num(p, 'calib-samples', { min: 1, max: 1_000_000, integer: true });
  const { resize, mean, std, layout } = imageOptions(p);
  const maxBytes = maxInputBytes(p);
  return async (inputs) => {
    const set = loadCalibration(path, { inputs, samples, resize, mean, std, layout, shapes, values, seed, maxBytes });
    if (!set.ok) throw set.error;
    return {
      feeds: [...set.value.feeds()],
      description: describeCalibration(set.value),
      collectStats: async (loaded, names, onProgress) => {
        const model = new Model(loaded.model);
        const wanted = new Set(names);
        const layers = findLayers(model).filter((l) => wanted.has(l.name));
        // Patch second moments (k×k convs) let the chains' last factor be refitted; their
        // products run in ORT's GEMM, which makes high-resolution convs affordable.
        const engine = createOrtGemmEngine();
        try {
          const r = await collectStats(model, layers, set.value, { external: loaded.external, engine, onProgress });
          if (!r.ok) throw r.error;
          return r.value.stats;
        } finally {
          await engine.dispose();
        }
      },
    };
  };
}
