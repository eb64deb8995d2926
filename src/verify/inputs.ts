/**
 * Seeded random feeds built from a session's input metadata, plus the parsers for
 * `--shape NAME:1x3x224x224` and `--input NAME:file.npy`.
 *
 * Values drawn (documented behaviour, relied on by tests):
 * - float16/32/64: N(0, 1) — normalised images, audio features and embeddings look
 *   roughly like that, and a symmetric distribution exercises signs of every weight;
 * - integer types: uniform in {0, 1, 2, 3} — small enough to be a valid index into any
 *   table of ≥ 4 entries;
 * - bool: fair coin.
 * Inputs whose legal values are narrower (silero VAD's `sr` must be 8000 or 16000) need a
 * value override (`values`, e.g. from `--input sr:sr.npy`) or a `defaultFeedsFor` hook.
 *
 * Every input draws from its own forked stream, so overriding one input leaves the
 * random data of the others unchanged.
 */
import { readNpy } from '../io/npy.js';
import { err, ok, type Result } from '../errors.js';
import { createRng, type Rng } from '../util/rng.js';
import type { ValueInfo } from './session.js';
import { castTensor, elementCount, fromNpy, fromNumbers, isElemType, isFloatType, type Feeds, type HostTensor } from './tensor.js';

export type ShapeOverrides = Record<string, readonly number[]>;
export type ValueOverrides = Record<string, HostTensor>;

/** A dynamic dim that nobody fixed, so it was set to 1. `symbol` is '' when unnamed. */
export interface DefaultedDim { input: string; axis: number; symbol: string }

/**
 * Hook consulted for each input without a value override before random data is drawn:
 * return a tensor (of the given dims) to use it, or undefined for the default draw.
 * Use it for inputs with a narrow legal domain (sample rates, lengths, masks).
 */
export type DefaultFeedsHook = (input: ValueInfo, dims: readonly number[], rng: Rng) => HostTensor | undefined;

export interface FeedOptions {
  /** Default 0. */
  seed?: number;
  /** How many feeds (batches of inputs) to build; default 1. */
  count?: number;
  shapes?: ShapeOverrides;
  /** Fixed values used in every feed (cast to the input's type when lossless). */
  values?: ValueOverrides;
  defaultFeedsFor?: DefaultFeedsHook;
  /**
   * Draw only this many values per random input and repeat them (for timing inputs, whose
   * values do not change the time: drawing 2^26 normals took about a second).
   */
  period?: number;
}

export interface FeedPlan {
  feeds: readonly Feeds[];
  /** The concrete dims used for each input. */
  dims: Record<string, number[]>;
  defaulted: DefaultedDim[];
}

/** Largest random input we generate (elements per input; 2^26 float32 = 256 MiB). */
export const MAX_FEED_ELEMENTS = 2 ** 26;

export function buildFeeds(inputs: readonly ValueInfo[], opts: FeedOptions = {}): Result<FeedPlan> {
  const bad = inputs.find((i) => !i.isTensor || !isElemType(i.type));
  if (bad) return err('unsupported', `input ${bad.name} has type ${bad.type || 'non-tensor'}; only numeric and bool tensors can be fed`);
  const resolved = resolveDims(inputs, opts.shapes ?? {}, opts.values ?? {});
  if (!resolved.ok) return resolved;
  const { dims, defaulted, values } = resolved.value;
  // Dims come from the model file (untrusted) or --shape: check them before allocating.
  for (const input of inputs) {
    if (values[input.name]) continue;
    const d = dims[input.name]!;
    const n = d.reduce((a, b) => a * b, 1);
    if (d.some((x) => !Number.isSafeInteger(x) || x < 0) || !(n <= MAX_FEED_ELEMENTS)) {
      return err('unsupported', `input ${input.name} has dims [${d.join(',')}]: over ${MAX_FEED_ELEMENTS} elements for a random input; set smaller dims with --shape or give a value with --input`);
    }
  }

  const base = createRng(opts.seed ?? 0);
  const streams = inputs.map(() => base.fork());
  const feeds: Feeds[] = [];
  for (let k = 0; k < (opts.count ?? 1); k++) {
    const feed: Feeds = {};
    inputs.forEach((input, i) => {
      const d = dims[input.name]!;
      const rng = streams[i]!;
      const fixed = values[input.name] ?? opts.defaultFeedsFor?.(input, d, rng);
      feed[input.name] = fixed ?? randomTensor(input, d, rng, opts.period);
    });
    feeds.push(feed);
  }
  return ok({ feeds, dims, defaulted });
}

function randomTensor(input: ValueInfo, dims: readonly number[], rng: Rng, period?: number): HostTensor {
  if (!isElemType(input.type)) throw new Error(`unreachable: ${input.type}`);
  const n = elementCount(dims);
  const v = new Float64Array(n);
  const drawn = period !== undefined && period >= 1 ? Math.min(n, Math.floor(period)) : n;
  if (isFloatType(input.type)) for (let j = 0; j < drawn; j++) v[j] = rng.normal();
  else if (input.type === 'bool') for (let j = 0; j < drawn; j++) v[j] = rng.next() < 0.5 ? 1 : 0;
  else for (let j = 0; j < drawn; j++) v[j] = rng.int(4);
  // The rest repeats the values drawn, doubling the copied span each time.
  for (let have = drawn; have > 0 && have < n; have *= 2) v.copyWithin(have, 0, Math.min(have, n - have));
  return fromNumbers(input.type, dims, v);
}

/**
 * Concrete dims for every input. Symbols bind across inputs (silero's `batch` appears in
 * `input` and `state`), first from shape overrides, then from value overrides; anything
 * left becomes 1 and is reported.
 */
function resolveDims(
  inputs: readonly ValueInfo[], shapes: ShapeOverrides, values: ValueOverrides,
): Result<{ dims: Record<string, number[]>; defaulted: DefaultedDim[]; values: ValueOverrides }> {
  const names = new Set(inputs.map((i) => i.name));
  const list = `inputs are: ${inputs.map((i) => i.name).join(', ')}`;
  for (const n of [...Object.keys(shapes), ...Object.keys(values)]) {
    if (!names.has(n)) return err('usage', `no model input named '${n}' (${list})`);
  }
  const bindings = new Map<string, number>();
  const given: Record<string, readonly number[]> = {};
  const cast: ValueOverrides = {};
  for (const input of inputs) {
    const s = shapes[input.name];
    const v = values[input.name];
    if (s && v && !sameDims(s, v.dims)) {
      return err('usage', `input ${input.name}: --shape ${s.join('x')} disagrees with the given value's shape ${v.dims.join('x')}`);
    }
    const want = s ?? v?.dims;
    if (want) {
      const check = bindShape(input, want, bindings);
      if (!check.ok) return check;
      given[input.name] = want;
    }
    if (v) {
      const c = castTensor(v, input.type as HostTensor['type']);
      if (typeof c === 'string') return err('usage', `input ${input.name} expects ${input.type}: ${c}`);
      cast[input.name] = c;
    }
  }
  const dims: Record<string, number[]> = {};
  const defaulted: DefaultedDim[] = [];
  for (const input of inputs) {
    const g = given[input.name];
    if (g) { dims[input.name] = [...g]; continue; }
    dims[input.name] = input.shape.map((d, axis) => {
      if (typeof d === 'number' && d >= 0) return d;
      const sym = typeof d === 'string' ? d : '';
      const b = sym ? bindings.get(sym) : undefined;
      if (b !== undefined) return b;
      defaulted.push({ input: input.name, axis, symbol: sym });
      if (sym) bindings.set(sym, 1);
      return 1;
    });
  }
  return ok({ dims, defaulted, values: cast });
}

/** Checks `want` against the declared shape and records symbol values. */
function bindShape(input: ValueInfo, want: readonly number[], bindings: Map<string, number>): Result<void> {
  const decl = input.shape;
  const show = `[${decl.join(',')}]`;
  // [] may mean "rank unknown" in ORT metadata, so any rank is accepted against it.
  if (decl.length === 0) return ok(undefined);
  if (decl.length !== want.length) {
    return err('usage', `input ${input.name} has rank ${decl.length} ${show}, got ${want.length} dims ${want.join('x')}`);
  }
  for (let a = 0; a < decl.length; a++) {
    const d = decl[a]!;
    const w = want[a]!;
    if (typeof d === 'number' && d >= 0 && d !== w) {
      return err('usage', `input ${input.name} axis ${a} is fixed at ${d} ${show}, got ${w}`);
    }
    if (typeof d === 'string') {
      const prev = bindings.get(d);
      if (prev !== undefined && prev !== w) {
        return err('usage', `dim '${d}' is ${prev} from an earlier input but ${w} for ${input.name}`);
      }
      bindings.set(d, w);
    }
  }
  return ok(undefined);
}

const sameDims = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

// ------------------------------------------------------------------ CLI strings

/** `NAME:1x3x224x224` (the name may itself contain ':', e.g. `onnx::Flatten_0:1x25x96`). */
export function parseShapeArg(arg: string): Result<{ name: string; dims: number[] }> {
  const at = arg.lastIndexOf(':');
  const usage = (why: string) => err('usage', `--shape '${arg}': ${why}; expected NAME:DIMS like x:1x3x224x224`);
  if (at <= 0) return usage('missing NAME:');
  const name = arg.slice(0, at);
  const text = arg.slice(at + 1);
  if (!/^\d+(x\d+)*$/.test(text)) return usage(`'${text}' is not dims separated by 'x'`);
  const dims = text.split('x').map(Number);
  if (dims.some((d) => d < 1 || !Number.isSafeInteger(d))) return usage('dims must be positive integers');
  return ok({ name, dims });
}

export function parseShapeArgs(args: readonly string[]): Result<ShapeOverrides> {
  const out: Record<string, number[]> = {};
  for (const a of args) {
    const r = parseShapeArg(a);
    if (!r.ok) return r;
    if (r.value.name in out) return err('usage', `--shape given twice for ${r.value.name}`);
    out[r.value.name] = r.value.dims;
  }
  return ok(out);
}

/**
 * `NAME:path.npy`. The split is at the first ':' that is not part of '::', so ONNX names
 * like `onnx::Flatten_0` and Windows paths like `C:\x.npy` both work.
 */
export function parseInputArg(arg: string): Result<{ name: string; file: string }> {
  let at = -1;
  for (let i = 0; i < arg.length; i++) {
    if (arg[i] === ':' && arg[i - 1] !== ':' && arg[i + 1] !== ':') { at = i; break; }
  }
  if (at <= 0 || at === arg.length - 1) return err('usage', `--input '${arg}': expected NAME:FILE.npy`);
  const file = arg.slice(at + 1);
  if (!file.toLowerCase().endsWith('.npy')) return err('usage', `--input '${arg}': ${file} is not a .npy file`);
  return ok({ name: arg.slice(0, at), file });
}

/** Parses and loads every `--input` argument. */
/** `maxBytes` bounds each .npy file (--max-input-mb). */
export function loadInputArgs(args: readonly string[], maxBytes?: number): Result<ValueOverrides> {
  const out: ValueOverrides = {};
  for (const a of args) {
    const p = parseInputArg(a);
    if (!p.ok) return p;
    if (p.value.name in out) return err('usage', `--input given twice for ${p.value.name}`);
    const arr = readNpy(p.value.file, { maxBytes });
    if (!arr.ok) return arr;
    out[p.value.name] = fromNpy(arr.value);
  }
  return ok(out);
}
