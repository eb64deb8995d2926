/**
 * Calibration data: the inputs a model is run on to measure its layers' input statistics
 * (see stats.ts). A CalibSet yields feeds (one per model run) for every model input.
 *
 * Sources (`loadCalibration(path, opts)`):
 * - `.npy`: one array with the samples on the first axis, for the one model input that
 *   has no fixed value (`values`). An array of rank r+1 for an input of rank r stacks
 *   whole inputs (`[16,1,3,224,224]` → 16 feeds of `[1,3,224,224]`); an array of the
 *   input's own rank r has the samples on the input's batch axis (`[16,3,224,224]` for
 *   `[1,3,224,224]` or `[N,3,224,224]`): one sample per row.
 * - `.npz`: one array per input name, same rule per array, the same sample count in all.
 *   Inputs missing from the archive get their `values` override or seeded random data.
 * - a folder of `.npy` / `.npz` files (read in name order; their samples concatenate), or
 *   a folder of `.png` / `.jpg` / `.jpeg` images (one sample each, see image.ts) for a
 *   single 4-D float input: resized to `resize` or to the input's static H×W (or the H×W
 *   of its `shapes` override), RGB (or luminance for a one-channel input), scaled to
 *   [0, 1], then `(x − mean)/std` per channel, NCHW (default) or NHWC.
 *
 * Batching: when the batch axis (axis 0) of every calibrated input is dynamic, samples
 * with the same dims are concatenated along it into feeds of up to `batch` (default 8)
 * samples — unless that dim's symbol is shared with an input given a fixed value (its
 * value fixes the size). When it is fixed at B > 1, rows are grouped B at a time (a
 * remainder is dropped and noted). Otherwise every sample is its own feed.
 *
 * Data dims come from the data: a `shapes` override of a calibrated input is not applied
 * to it (it only sets the image size). Inputs that are not calibrated get their `values`
 * override or seeded random data at their `shapes` override (see verify/inputs.ts), with
 * symbols bound by the calibrated inputs' dims.
 *
 * Everything is read, checked (shape, dtype, NaN/Inf) and converted when loading, so a
 * CalibSet never fails while it yields; `samples` (default 64) caps what is read.
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { err, ok, type Result } from '../errors.js';
import { buildFeeds, type ShapeOverrides, type ValueOverrides } from '../verify/inputs.js';
import type { ValueInfo } from '../verify/session.js';
import { sideInputKind } from '../util/bounds.js';
import { DEFAULT_CALIB_SAMPLES, DEFAULT_RANDOM_SAMPLES, type CalibOptions, type CalibSet, type CalibSource } from './calib-set.js';
import { assemble } from './feeds.js';
import { ARRAY_EXT, checkCount, collectArrays, collectImages, extOf, IMAGE_EXT, planImages } from './samples.js';

export type { CalibOptions, CalibSet, CalibSource } from './calib-set.js';

/** Lists a folder's calibration files (by name order), or says why it has none usable. */
function listFolder(dir: string): Result<{ files: string[]; kind: 'images' | 'arrays' }> {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => !n.startsWith('.'));
  } catch (e) {
    return err('io', `cannot read calibration folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  names.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const images: string[] = [];
  const arrays: string[] = [];
  for (const n of names) {
    const full = path.join(dir, n);
    const ext = extOf(n);
    if (!IMAGE_EXT.has(ext) && !ARRAY_EXT.has(ext)) continue;
    try { if (!statSync(full).isFile()) continue; } catch { continue; }
    (IMAGE_EXT.has(ext) ? images : arrays).push(full);
  }
  if (images.length > 0 && arrays.length > 0) {
    return err('usage', `calibration folder ${dir} mixes images (${images.length}) and arrays (${arrays.length}); keep one kind`);
  }
  if (images.length === 0 && arrays.length === 0) {
    return err('usage', `calibration folder ${dir} has no .npy, .npz, .png, .jpg or .jpeg files`);
  }
  return ok(images.length > 0 ? { files: images, kind: 'images' } : { files: arrays, kind: 'arrays' });
}

/** The single input images or a .npy feed: the one without a fixed value. */
function singleInput(inputs: readonly ValueInfo[], values: ValueOverrides, where: string, what: string): Result<ValueInfo> {
  const open = inputs.filter((i) => !(i.name in values));
  if (open.length === 1) return ok(open[0]!);
  const why = open.length === 0 ? 'every input has a fixed value' : `inputs ${open.map((i) => i.name).join(', ')} have no fixed value`;
  return err('usage', `${where}: ${what} feed a single input, but ${why}${what === 'images' ? '' : '; use a .npz with one array per input name'}`);
}

/** Loads calibration data from a .npy, a .npz, or a folder of arrays or images. */
export function loadCalibration(file: string, opts: CalibOptions): Result<CalibSet> {
  for (const [what, v] of [['samples', opts.samples], ['batch', opts.batch]] as const) {
    const c = checkCount(what, v);
    if (!c.ok) return c;
  }
  const names = new Set(opts.inputs.map((i) => i.name));
  for (const n of [...Object.keys(opts.values ?? {}), ...Object.keys(opts.shapes ?? {})]) {
    if (!names.has(n)) return err('usage', `no model input named '${n}' (inputs are: ${[...names].join(', ')})`);
  }
  const cap = opts.samples ?? DEFAULT_CALIB_SAMPLES;
  if (opts.maxBytes !== undefined && !(opts.maxBytes > 0)) return err('usage', `maxBytes must be positive, got ${opts.maxBytes}`);
  // A FIFO or a device is refused here: opening one would block or never end.
  const kindOf = sideInputKind(file, `${opts.purpose ?? 'calibration'} data`);
  if (!kindOf.ok) return kindOf;
  const isDir = kindOf.value === 'dir';
  let files: string[];
  let kind: 'images' | 'arrays';
  if (isDir) {
    const l = listFolder(file);
    if (!l.ok) return l;
    ({ files, kind } = l.value);
  } else {
    const ext = extOf(file);
    if (ARRAY_EXT.has(ext)) kind = 'arrays';
    else if (IMAGE_EXT.has(ext)) kind = 'images';
    else return err('usage', `calibration data ${file}: expected a .npy, .npz, image (.png/.jpg/.jpeg) or a folder of them`);
    files = [file];
  }

  if (kind === 'images') {
    const single = singleInput(opts.inputs, opts.values ?? {}, file, 'images');
    if (!single.ok) return single;
    const plan = planImages(single.value, opts, file);
    if (!plan.ok) return plan;
    const c = collectImages(files, single.value, plan.value, cap);
    if (!c.ok) return c;
    const { maxBytes: _, purpose: __, ...shown } = plan.value;
    const source: CalibSource = { kind: 'images', path: file, files: c.value.files, ...shown };
    return assemble({ source, inputs: opts.inputs, calibrated: [single.value.name], collected: c.value, opts });
  }
  const c = collectArrays(files, opts.inputs, opts, cap);
  if (!c.ok) return c;
  const source: CalibSource = isDir ? { kind: 'arrays', path: file, files: c.value.files } : { kind: extOf(file) === '.npz' ? 'npz' : 'npy', path: file };
  return assemble({ source, inputs: opts.inputs, calibrated: c.value.calibrated, collected: c.value, opts });
}

export interface RandomCalibOptions {
  /** Feeds to draw (default 8). */
  samples?: number;
  /** Default 0. */
  seed?: number;
  shapes?: ShapeOverrides;
  values?: ValueOverrides;
}

/** Seeded random feeds (verify/inputs.ts buildFeeds): the default without calibration data. */
export function randomCalibration(inputs: readonly ValueInfo[], opts: RandomCalibOptions = {}): Result<CalibSet> {
  const c = checkCount('samples', opts.samples);
  if (!c.ok) return c;
  const count = opts.samples ?? DEFAULT_RANDOM_SAMPLES;
  const seed = opts.seed ?? 0;
  const plan = buildFeeds(inputs, { seed, count, shapes: opts.shapes, values: opts.values });
  if (!plan.ok) return plan;
  const values = opts.values ?? {};
  const notes = plan.value.defaulted.map((d) => `dynamic dim ${d.input}[${d.axis}]${d.symbol ? ` (${d.symbol})` : ''} set to 1 for calibration`);
  const feeds = plan.value.feeds;
  return ok({
    source: { kind: 'random', seed },
    samples: count,
    batches: count,
    batchSize: 1,
    calibrated: [],
    fixed: inputs.filter((i) => i.name in values).map((i) => i.name),
    random: inputs.filter((i) => !(i.name in values)).map((i) => i.name),
    notes,
    *feeds() { yield* feeds; },
  });
}

const showList = (v: readonly number[]): string => v.map((x) => String(Number(x.toPrecision(4)))).join(',');

/** One line for the report, e.g. "16 samples from images in calib/ (resize 48x320, mean 0.5,0.5,0.5, std 0.5,0.5,0.5, nchw)". */
export function describeCalibration(set: CalibSet): string {
  const s = set.source;
  const n = `${set.samples} sample${set.samples === 1 ? '' : 's'}`;
  let text: string;
  switch (s.kind) {
    case 'random': text = `random inputs (seed ${s.seed}, ${n})`; break;
    case 'npy': case 'npz': text = `${n} from ${s.path}`; break;
    case 'arrays': text = `${n} from ${s.files} file${s.files === 1 ? '' : 's'} in ${s.path}`; break;
    case 'images':
      text = `${n} from images in ${s.path} (resize ${s.height}x${s.width}, mean ${showList(s.mean)}, std ${showList(s.std)}, ${s.layout}${s.channels === 1 ? ', luminance' : ''})`;
      break;
  }
  const extra: string[] = [];
  if (s.kind !== 'random' && set.batchSize > 1) extra.push(`${set.batches} run${set.batches === 1 ? '' : 's'} of up to ${set.batchSize}`);
  if (set.calibrated.length > 0 && s.kind !== 'images') extra.push(`inputs ${set.calibrated.join(', ')}`);
  if (set.calibrated.length > 0 && set.fixed.length > 0) extra.push(`fixed ${set.fixed.join(', ')}`);
  if (set.calibrated.length > 0 && set.random.length > 0) extra.push(`random ${set.random.join(', ')}`);
  return extra.length > 0 ? `${text}; ${extra.join('; ')}` : text;
}
