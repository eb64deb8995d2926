/**
 * Calibration samples from files: .npy/.npz arrays (checked against the input's declared
 * shape, cast, NaN/Inf refused) and images (sized and normalised for a single 4-D input).
 */
import path from 'node:path';
import { err, ok, type Result } from '../errors.js';
import { parseNpy, type NpyArray } from '../io/npy.js';
import { parseNpz } from '../io/npz.js';
import type { ValueInfo } from '../verify/session.js';
import {
  castTensor, elementCount, fromNpy, fromNumbers, isElemType, isFloatType, type ElemType, type HostData, type HostTensor,
} from '../verify/tensor.js';
import { DEFAULT_MAX_INPUT_BYTES, limitText, readSideInput, showBytes } from '../util/bounds.js';
import type { CalibOptions } from './calib-set.js';
import { checkNormalisation, decodeImage, imageToTensor, type Layout } from './image.js';

export const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg']);
export const ARRAY_EXT = new Set(['.npy', '.npz']);
export const extOf = (p: string): string => path.extname(p).toLowerCase();
const showDims = (d: readonly (number | string)[]): string => `[${d.map((x) => (typeof x === 'string' && x === '' ? '?' : x)).join(',')}]`;
export const isFixed = (d: number | string | undefined): d is number => typeof d === 'number' && d >= 0;

export function checkCount(what: string, v: number | undefined): Result<void> {
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
export function concat0(parts: readonly HostTensor[]): HostTensor {
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

export type Mode = 'stack' | 'batch';

/** One calibration sample: a tensor per calibrated input (dims [1, …] in batch mode). */
export interface Sample { tensors: Record<string, HostTensor> }

export interface Collected {
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
export function collectArrays(files: readonly string[], inputs: readonly ValueInfo[], opts: CalibOptions, cap: number): Result<Collected & { calibrated: string[] }> {
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

export interface ImagePlan { height: number; width: number; channels: number; mean: number[]; std: number[]; layout: Layout; maxBytes: number; purpose?: string }

/** Works out image size, channels and normalisation for the single calibrated input. */
export function planImages(input: ValueInfo, opts: CalibOptions, where: string): Result<ImagePlan> {
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
      const c = checkCount(`resize ${what}`, v);
      if (!c.ok) return c;
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

export function collectImages(files: readonly string[], input: ValueInfo, plan: ImagePlan, cap: number): Result<Collected> {
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
