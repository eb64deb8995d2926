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
import { parseNpy, parseNpz, type NpyArray } from '../io/npy.js';
import { buildFeeds, type FeedPlan, type ShapeOverrides, type ValueOverrides } from '../verify/inputs.js';
import type { ValueInfo } from '../verify/session.js';
import {
  castTensor, elementCount, fromNpy, fromNumbers, isElemType, isFloatType, type ElemType, type Feeds, type HostData, type HostTensor,
} from '../verify/tensor.js';
import { DEFAULT_MAX_INPUT_BYTES, limitText, readSideInput, showBytes, sideInputKind } from '../util/bounds.js';
import { checkNormalisation, decodeImage, imageToTensor, type Layout } from './image.js';

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

// ---------------------------------------------------------------------------- helpers

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg']);
const ARRAY_EXT = new Set(['.npy', '.npz']);
const extOf = (p: string): string => path.extname(p).toLowerCase();
const showDims = (d: readonly (number | string)[]): string => `[${d.map((x) => (typeof x === 'string' && x === '' ? '?' : x)).join(',')}]`;
const isFixed = (d: number | string | undefined): d is number => typeof d === 'number' && d >= 0;

function checkCount(what: string, v: number | undefined): Result<void> {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) return err('usage', `${what} must be a positive integer, got ${v}`);
  return ok(undefined);
}

/** A data file: a regular file (not a FIFO or a device), within the size bound. */
function readBytes(file: string, maxBytes: number, purpose = 'calibration'): Result<Uint8Array> {
  return readSideInput(file, `${purpose} file`, maxBytes);
}

/** The first element that is NaN or ±Inf, or -1. float16 data is raw half bits. */
function firstNonFinite(t: HostTensor): number {
  const d = t.data;
  if (t.type === 'float16') {
    for (let i = 0; i < d.length; i++) if (((d[i] as number) & 0x7c00) === 0x7c00) return i;
  } else if (t.type === 'float32' || t.type === 'float64') {
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i] as number)) return i;
  }
  return -1;
}

/** A view of samples [from, to) of an array whose samples lie on axis 0. */
function sliceRows(t: HostTensor, from: number, to: number): HostTensor {
  const per = elementCount(t.dims.slice(1));
  return { type: t.type, dims: [to - from, ...t.dims.slice(1)], data: t.data.subarray(from * per, to * per) as HostData };
}

/** Concatenates tensors of one type along axis 0 (no copy for a single tensor). */
function concat0(parts: readonly HostTensor[]): HostTensor {
  if (parts.length === 1) return parts[0]!;
  const first = parts[0]!;
  const total = parts.reduce((a, p) => a + p.data.length, 0);
  const Ctor = first.data.constructor as new (n: number) => HostData;
  const data = new Ctor(total);
  let o = 0;
  for (const p of parts) { (data as Float32Array).set(p.data as Float32Array, o); o += p.data.length; }
  return { type: first.type, dims: [parts.reduce((a, p) => a + p.dims[0]!, 0), ...first.dims.slice(1)], data };
}

// ---------------------------------------------------------------------------- samples

type Mode = 'stack' | 'batch';

/** One calibration sample: a tensor per calibrated input (dims [1, …] in batch mode). */
interface Sample { tensors: Record<string, HostTensor> }

interface Collected {
  samples: Sample[];
  modes: Map<string, Mode>;
  files: number;
}

/**
 * Checks an array against an input's declared shape and says how its samples lie:
 * rank r+1 stacks whole inputs, rank r has them on the batch axis.
 */
function arrayMode(file: string, key: string, arr: NpyArray, input: ValueInfo): Result<Mode> {
  const decl = input.shape;
  const r = decl.length;
  const shape = arr.shape;
  const what = `${file}: array ${key} has shape ${shape.length ? shape.join('x') : '() (a scalar)'}`;
  const bad = (why: string) => err('usage', `${what}, ${why}`);
  let mode: Mode;
  if (shape.length === r + 1) mode = 'stack';
  else if (shape.length === r && r > 0) mode = 'batch';
  else {
    return bad(`but input ${input.name} is ${showDims(decl)}: expected the samples on a first axis, then ${r > 0 ? `${r} or ${r - 1} more dims` : 'nothing (scalar samples)'}`);
  }
  const sampleDims = shape.slice(1);
  const declRest = mode === 'stack' ? decl : decl.slice(1);
  for (let a = 0; a < declRest.length; a++) {
    const d = declRest[a];
    if (isFixed(d) && d !== sampleDims[a]) {
      const axis = mode === 'stack' ? a : a + 1;
      return bad(`but input ${input.name} ${showDims(decl)} has ${d} on axis ${axis} (the array has ${sampleDims[a]})`);
    }
  }
  if (shape[0] === 0) return err('usage', `${file}: array ${key} holds no samples (its first dim is 0)`);
  return ok(mode);
}

/** Casts to the input's type and checks finiteness; names the file on failure. */
function prepareArray(file: string, key: string, arr: NpyArray, input: ValueInfo, rows: number): Result<HostTensor> {
  const t = sliceRows(fromNpy(arr), 0, rows);
  const c = castTensor(t, input.type as ElemType);
  if (typeof c === 'string') return err('usage', `${file}: array ${key} (${arr.dtype}) cannot feed input ${input.name} (${input.type}): ${c}`);
  const bad = firstNonFinite(c);
  if (bad >= 0) {
    const per = elementCount(c.dims.slice(1)) || 1;
    return err('usage', `${file}: array ${key} has NaN or Inf (sample ${Math.floor(bad / per)}, element ${bad % per})`);
  }
  return ok(c);
}

/** Reads .npy/.npz files in order until `cap` samples are collected. */
function collectArrays(files: readonly string[], inputs: readonly ValueInfo[], opts: CalibOptions, cap: number): Result<Collected & { calibrated: string[] }> {
  const byName = new Map(inputs.map((i) => [i.name, i]));
  const values = opts.values ?? {};
  const open = inputs.filter((i) => !(i.name in values)).map((i) => i.name);
  const list = `inputs are: ${inputs.map((i) => i.name).join(', ')}`;
  const samples: Sample[] = [];
  const modes = new Map<string, Mode>();
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_INPUT_BYTES;
  let calibrated: string[] | undefined;
  let used = 0;
  for (const file of files) {
    if (samples.length >= cap) break;
    used++;
    const bytes = readBytes(file, maxBytes, opts.purpose);
    if (!bytes.ok) return bytes;
    let arrays: Map<string, NpyArray>;
    if (extOf(file) === '.npz') {
      const z = parseNpz(bytes.value, file, { maxBytes });
      if (!z.ok) return z;
      arrays = z.value;
      if (arrays.size === 0) return err('usage', `${file}: the archive holds no arrays`);
      for (const k of arrays.keys()) if (!byName.has(k)) return err('usage', `${file}: array '${k}' names no model input (${list})`);
    } else {
      const a = parseNpy(bytes.value, file);
      if (!a.ok) return a;
      if (open.length !== 1) {
        const why = open.length === 0 ? 'every input has a fixed value' : `inputs ${open.join(', ')} have no fixed value`;
        return err('usage', `${file}: a .npy file feeds a single input, but ${why}; use a .npz with one array per input name`);
      }
      arrays = new Map([[open[0]!, a.value]]);
    }
    const keys = [...arrays.keys()].sort();
    if (!calibrated) calibrated = keys;
    else if (calibrated.length !== keys.length || calibrated.some((k, i) => k !== keys[i])) {
      return err('usage', `${file}: holds arrays ${keys.join(', ')}, but earlier files hold ${calibrated.join(', ')}`);
    }
    let rows: number | undefined;
    const tensors = new Map<string, HostTensor>();
    for (const key of keys) {
      const arr = arrays.get(key)!;
      const input = byName.get(key)!;
      if (!input.isTensor || !isElemType(input.type)) return err('unsupported', `input ${key} has type ${input.type || 'non-tensor'}; only numeric and bool tensors can be fed`);
      const mode = arrayMode(file, key, arr, input);
      if (!mode.ok) return mode;
      const prev = modes.get(key);
      if (prev && prev !== mode.value) return err('usage', `${file}: array ${key} has rank ${arr.shape.length}, earlier files gave rank ${prev === 'stack' ? input.shape.length + 1 : input.shape.length}`);
      modes.set(key, mode.value);
      const n = arr.shape[0]!;
      if (rows !== undefined && n !== rows) return err('usage', `${file}: arrays hold different sample counts (${keys[0]}: ${rows}, ${key}: ${n})`);
      rows = n;
    }
    const take = Math.min(rows!, cap - samples.length);
    for (const key of keys) {
      const t = prepareArray(file, key, arrays.get(key)!, byName.get(key)!, take);
      if (!t.ok) return t;
      tensors.set(key, t.value);
    }
    for (let s = 0; s < take; s++) {
      const rec: Record<string, HostTensor> = {};
      for (const key of keys) {
        const t = tensors.get(key)!;
        const one = sliceRows(t, s, s + 1);
        rec[key] = modes.get(key) === 'stack' ? { ...one, dims: one.dims.slice(1) } : one;
      }
      samples.push({ tensors: rec });
    }
  }
  return ok({ samples, modes, files: used, calibrated: calibrated ?? [] });
}

interface ImagePlan { height: number; width: number; channels: number; mean: number[]; std: number[]; layout: Layout; maxBytes: number; purpose?: string }

/** Works out image size, channels and normalisation for the single calibrated input. */
function planImages(input: ValueInfo, opts: CalibOptions, where: string): Result<ImagePlan> {
  const decl = input.shape;
  const layout = opts.layout ?? 'nchw';
  if (layout !== 'nchw' && layout !== 'nhwc') return err('usage', `layout must be nchw or nhwc, got ${String(layout)}`);
  if (!isElemType(input.type) || !isFloatType(input.type)) return err('usage', `${where}: images need a float input, but ${input.name} is ${input.type || 'not a tensor'}`);
  if (decl.length !== 4) return err('usage', `${where}: images feed a 4-D input (${layout}), but ${input.name} is ${showDims(decl)}`);
  const [cAxis, hAxis, wAxis] = layout === 'nchw' ? [1, 2, 3] : [3, 1, 2];
  const override = opts.shapes?.[input.name];
  const dimOf = (a: number): number | undefined => (isFixed(decl[a]) ? (decl[a] as number) : override?.[a]);
  const cDecl = dimOf(cAxis);
  const channels = cDecl ?? 3;
  if (channels !== 1 && channels !== 3) {
    return err('usage', `${where}: input ${input.name} ${showDims(decl)} has ${channels} channels on axis ${cAxis} (${layout}); images give 3 (RGB) or 1 (luminance)${layout === 'nchw' ? '; try layout nhwc' : ''}`);
  }
  let height = dimOf(hAxis);
  let width = dimOf(wAxis);
  if (opts.resize) {
    const [h, w] = opts.resize;
    for (const [what, v] of [['height', h], ['width', w]] as const) {
      if (!Number.isSafeInteger(v) || v < 1) return err('usage', `resize ${what} must be a positive integer, got ${v}`);
    }
    const fixedH = isFixed(decl[hAxis]) ? decl[hAxis] : undefined;
    const fixedW = isFixed(decl[wAxis]) ? decl[wAxis] : undefined;
    if ((fixedH !== undefined && fixedH !== h) || (fixedW !== undefined && fixedW !== w)) {
      return err('usage', `resize ${h}x${w} disagrees with input ${input.name} ${showDims(decl)} (${layout})`);
    }
    height = h; width = w;
  }
  if (height === undefined || width === undefined) {
    return err('usage', `${where}: input ${input.name} ${showDims(decl)} has a dynamic height or width: give a resize HxW (or a --shape for it)`);
  }
  // Every sample is an array of this size (and the resize works on 3 planes of it).
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_INPUT_BYTES;
  const sampleBytes = height * width * 3 * 4;
  if (sampleBytes > maxBytes) {
    const from = opts.resize ? `resize ${height}x${width}` : `${where}: input ${input.name} ${showDims(decl)}`;
    return err('usage', `${from}: images of ${height}x${width} take ${showBytes(sampleBytes)} each as float32, over the ${limitText(maxBytes)}`);
  }
  const bad = checkNormalisation(channels, opts.mean, opts.std);
  if (bad) return err('usage', `image normalisation: ${bad}`);
  const fill = (v: readonly number[] | undefined, d: number): number[] =>
    !v || v.length === 0 ? new Array<number>(channels).fill(d) : v.length === 1 ? new Array<number>(channels).fill(v[0]!) : [...v];
  return ok({ height, width, channels, mean: fill(opts.mean, 0), std: fill(opts.std, 1), layout, maxBytes, purpose: opts.purpose });
}

function collectImages(files: readonly string[], input: ValueInfo, plan: ImagePlan, cap: number): Result<Collected> {
  const samples: Sample[] = [];
  const dims = plan.layout === 'nchw' ? [1, plan.channels, plan.height, plan.width] : [1, plan.height, plan.width, plan.channels];
  for (const file of files.slice(0, cap)) {
    const bytes = readBytes(file, plan.maxBytes, plan.purpose);
    if (!bytes.ok) return bytes;
    const img = decodeImage(bytes.value, file, plan.maxBytes);
    if (!img.ok) return img;
    if (img.value.width < 1 || img.value.height < 1) return err('usage', `${file}: the image is empty`);
    const data = imageToTensor(img.value, plan);
    const t: HostTensor = input.type === 'float32' ? { type: 'float32', dims, data } : fromNumbers(input.type as ElemType, dims, data);
    samples.push({ tensors: { [input.name]: t } });
  }
  return ok({ samples, modes: new Map([[input.name, 'batch' as Mode]]), files: Math.min(files.length, cap) });
}

// ---------------------------------------------------------------------------- feeds

interface Assembly {
  source: CalibSource;
  inputs: readonly ValueInfo[];
  calibrated: readonly string[];
  collected: Collected;
  opts: CalibOptions;
}

/** Groups samples into feeds and plans the data of the other inputs. */
function assemble(a: Assembly): Result<CalibSet> {
  const { inputs, calibrated, collected, opts } = a;
  const byName = new Map(inputs.map((i) => [i.name, i]));
  const values = opts.values ?? {};
  const notes: string[] = [];
  let samples = collected.samples;
  if (samples.length === 0) return err('usage', `${describeSourcePath(a.source)}: no samples`);

  // Samples per feed (see the file comment).
  const fixedB = new Set<number>();
  let allFree = true;
  for (const name of calibrated) {
    const d0 = byName.get(name)!.shape[0];
    const mode = collected.modes.get(name)!;
    if (mode === 'batch' && isFixed(d0) && d0 > 1) fixedB.add(d0);
    const shared = typeof d0 === 'string' && d0 !== '' && inputs.some((i) => i.name in values && !calibrated.includes(i.name) && i.shape.includes(d0));
    if (isFixed(d0) || byName.get(name)!.shape.length === 0 || shared) allFree = false;
  }
  let perFeed = 1;
  let exact = false;
  if (fixedB.size > 0) {
    const [b] = [...fixedB];
    const same = fixedB.size === 1 && calibrated.every((n) => collected.modes.get(n) === 'batch' && byName.get(n)!.shape[0] === b);
    if (!same) return err('usage', `${describeSourcePath(a.source)}: inputs ${calibrated.join(', ')} take fixed batches of different sizes; give whole inputs (arrays of rank + 1) instead`);
    perFeed = b!;
    exact = true;
    const keep = samples.length - (samples.length % perFeed);
    if (keep === 0) return err('usage', `${describeSourcePath(a.source)}: ${samples.length} sample${samples.length === 1 ? '' : 's'}, but the input's batch dim is fixed at ${perFeed}`);
    if (keep < samples.length) notes.push(`${samples.length - keep} calibration sample(s) dropped: the batch dim is fixed at ${perFeed}`);
    samples = samples.slice(0, keep);
  } else if (allFree) {
    perFeed = opts.batch ?? DEFAULT_CALIB_BATCH;
  }

  // Consecutive samples whose dims agree (all axes but 0) share a feed.
  const groups: Sample[][] = [];
  const restKey = (s: Sample): string => calibrated.map((n) => s.tensors[n]!.dims.slice(1).join('x')).join('|');
  for (const s of samples) {
    const g = groups[groups.length - 1];
    if (g && g.length < perFeed && restKey(g[0]!) === restKey(s)) g.push(s);
    else {
      if (exact && g && g.length < perFeed) return err('usage', `${describeSourcePath(a.source)}: samples of one fixed-size batch have different dims`);
      groups.push([s]);
    }
  }
  const feedCalib = (g: Sample[]): Feeds => Object.fromEntries(calibrated.map((n) => [n, concat0(g.map((s) => s.tensors[n]!))]));

  // The other inputs: fixed values or seeded random data, one plan per distinct dims.
  const others = inputs.filter((i) => !calibrated.includes(i.name));
  const fixed = others.filter((i) => i.name in values).map((i) => i.name);
  const random = others.filter((i) => !(i.name in values)).map((i) => i.name);
  const shapes: ShapeOverrides = Object.fromEntries(Object.entries(opts.shapes ?? {}).filter(([n]) => !calibrated.includes(n)));
  const otherValues: ValueOverrides = Object.fromEntries(Object.entries(values).filter(([n]) => !calibrated.includes(n)));
  const signature = (g: Sample[]): string => calibrated.map((n) => `${n}:${g.reduce((s, x) => s + x.tensors[n]!.dims[0]!, 0)}x${g[0]!.tensors[n]!.dims.slice(1).join('x')}`).join('|');
  const plans = new Map<string, FeedPlan>();
  const slot: { key: string; k: number }[] = [];
  if (others.length > 0) {
    const counts = new Map<string, { count: number; first: Sample[] }>();
    for (const g of groups) {
      const key = signature(g);
      const c = counts.get(key);
      slot.push({ key, k: c ? c.count : 0 });
      if (c) c.count++; else counts.set(key, { count: 1, first: g });
    }
    for (const [key, { count, first }] of counts) {
      const plan = buildFeeds(inputs, { seed: opts.seed ?? 0, count, shapes, values: { ...otherValues, ...feedCalib(first) } });
      if (!plan.ok) return err(plan.error.kind, `${describeSourcePath(a.source)}: ${plan.error.message}`);
      for (const d of plan.value.defaulted) {
        if (!calibrated.includes(d.input)) notes.push(`dynamic dim ${d.input}[${d.axis}]${d.symbol ? ` (${d.symbol})` : ''} set to 1 for calibration`);
      }
      plans.set(key, plan.value);
    }
  } else {
    // Still check the calibrated dims against the declarations and each other (symbols).
    for (const g of groups.slice(0, 1)) {
      const plan = buildFeeds(inputs, { values: feedCalib(g) });
      if (!plan.ok) return err(plan.error.kind, `${describeSourcePath(a.source)}: ${plan.error.message}`);
    }
  }
  const otherNames = others.map((i) => i.name);
  return ok({
    source: a.source,
    samples: samples.length,
    batches: groups.length,
    batchSize: Math.max(...groups.map((g) => g.length)),
    calibrated: [...calibrated],
    fixed,
    random,
    notes: [...new Set(notes)],
    *feeds() {
      for (let i = 0; i < groups.length; i++) {
        const feed: Feeds = {};
        if (otherNames.length > 0) {
          const { key, k } = slot[i]!;
          const f = plans.get(key)!.feeds[k]!;
          for (const n of otherNames) feed[n] = f[n]!;
        }
        Object.assign(feed, feedCalib(groups[i]!));
        // Keep the model's input order.
        yield Object.fromEntries(inputs.map((inp) => [inp.name, feed[inp.name]!]));
      }
    },
  });
}

function describeSourcePath(s: CalibSource): string {
  return s.kind === 'random' ? 'random calibration' : s.path;
}

// ---------------------------------------------------------------------------- API

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
