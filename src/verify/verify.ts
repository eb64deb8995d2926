/**
 * Runs the original and the optimized model on the same seeded feeds and compares every
 * output. A verification that ran is `ok` even when it fails (`pass: false` with reasons);
 * an `err` means we could not verify at all (model missing, original model fails to run).
 *
 * Metrics are computed over all feeds together: outputs of the k feeds are concatenated
 * along axis 0, so a [1, 1] output still yields a meaningful cosine over k values.
 */
import { err, ok, type LrError, type Result } from '../errors.js';
import { compareOutput, DEFAULT_TOLERANCES, type OutputStats, type Tolerances } from './compare.js';
import { buildFeeds, type DefaultedDim, type DefaultFeedsHook, type FeedPlan, type ShapeOverrides, type ValueOverrides } from './inputs.js';
import { createSession, type Backend, type ModelSource, type OptLevel, type Session, type ValueInfo } from './session.js';
import { samplesIn, toNumbers, type Feeds, type HostTensor } from './tensor.js';

export interface VerifyOptions extends Partial<Tolerances> {
  /** Seed of the random feeds; default 0. */
  seed?: number;
  shapes?: ShapeOverrides;
  /** Fixed input values (from `--input NAME:file.npy`). */
  inputs?: ValueOverrides;
  defaultFeedsFor?: DefaultFeedsHook;
  /** intraOpNumThreads for both sessions; default 1. */
  threads?: number;
  /** Number of seeded feeds; default 3 (ignored when `feeds` are given). */
  runs?: number;
  /** Feeds to compare on instead of seeded random ones (e.g. held-out data, --verify-data). */
  feeds?: readonly Feeds[];
  /** Only these outputs decide pass or fail (--outputs); the others are compared and reported. */
  outputs?: readonly string[];
  graphOptimizationLevel?: OptLevel;
  backend?: Backend;
  /** The shapes learned at batch 1: feeds holding batches of samples report their worst sample (tensor.ts samplesIn). */
  learned?: ReadonlyMap<string, readonly number[]>;
}

export interface VerifyStats {
  outputs: OutputStats[];
  pass: boolean;
  /** Every reason for failure, across outputs and signature checks. */
  reasons: string[];
  seed: number;
  runs: number;
  inputDims: Record<string, number[]>;
  defaulted: DefaultedDim[];
  /** Set when the models ran as fp32 copies (a bf16 model: ORT's CPU runs no bf16 MatMul), saying so. */
  widened?: string;
  /** The runtime both models ran in: onnxruntime-node (native CPU) or onnxruntime-web (wasm); absent in older reports (ORT-node). */
  backend?: VerifyBackend;
}

export type VerifyBackend = 'ort-node' | 'ort-web-wasm';

/** The session settings both models of a verification share. */
function sessionOptions(opts: VerifyOptions) {
  return { backend: opts.backend ?? 'node', graphOptimizationLevel: opts.graphOptimizationLevel ?? 'all', intraOpNumThreads: opts.threads ?? 1 } as const;
}

/** The seeded (or given) feeds of a verification. */
function verificationFeeds(inputs: Session['inputs'], opts: VerifyOptions, count: number): Result<FeedPlan> {
  if (opts.feeds && opts.feeds.length > 0) {
    const feeds = opts.feeds.slice(0, count);
    const dims = Object.fromEntries(Object.entries(feeds[0]!).map(([k, t]) => [k, [...t.dims]]));
    return ok({ feeds, dims, defaulted: [] });
  }
  return buildFeeds(inputs, {
    seed: opts.seed ?? 0, count, ...(opts.shapes && { shapes: opts.shapes }), ...(opts.inputs && { values: opts.inputs }),
    ...(opts.defaultFeedsFor && { defaultFeedsFor: opts.defaultFeedsFor }),
  });
}

/**
 * Opens one of the two models of a verification (createSession by default; tests record
 * the order). `widen`: open a bf16 model as its fp32 copy (session.ts) straight away.
 */
export type SessionOpener = (which: 'original' | 'optimized', widen?: boolean) => Promise<Result<Session>>;

export async function verifyModels(original: ModelSource, optimized: ModelSource, opts: VerifyOptions = {}): Promise<Result<VerifyStats>> {
  const sessionOpts = sessionOptions(opts);
  return verifySequentially((which, widen) => which === 'original'
    ? createSession(original, { ...sessionOpts, label: `original ${describe(original)}`, ...(widen && { widen }) })
    : createSession(optimized, { ...sessionOpts, label: `optimized ${describe(optimized)}`, ...(widen && { widen }) }), opts);
}

/**
 * The comparison of `compareSessions` with one model loaded at a time: the original runs
 * on every feed and only its outputs are kept, its session is released, then the
 * optimized model is loaded and run. ORT holds a model's weights (and its own packed
 * copies) while a session lives, so two sessions of a big model at once peak at about
 * twice the memory of one (issue 16: a 2.4 GiB model verified at 2.25× its size).
 *
 * The verdict is the one `compareSessions` gives, in the same order of precedence: a
 * model that does not load, bad feeds, a signature mismatch, then per feed the original's
 * failure before the optimized one's (the original's failure is kept and reported where
 * the interleaved runs would have met it).
 */
export async function verifySequentially(open: SessionOpener, opts: VerifyOptions = {}, widen = false): Promise<Result<VerifyStats>> {
  const ref = await open('original', widen || undefined);
  if (!ref.ok) return ref;
  let refInfo: Pick<Session, 'inputs' | 'outputs' | 'widened'>;
  let plan: Result<FeedPlan>;
  let refRun: FeedRuns;
  try {
    refInfo = { inputs: ref.value.inputs, outputs: ref.value.outputs, widened: ref.value.widened };
    plan = verificationFeeds(ref.value.inputs, opts, feedCount(opts));
    refRun = plan.ok ? await runFeeds(ref.value, plan.value.feeds) : { outputs: [] };
  } finally {
    await ref.value.release();
  }
  const cand = await open('optimized', widen || refInfo.widened !== undefined || undefined);
  if (!cand.ok) return cand;
  // Only the optimized model had to run as its fp32 copy: compare it with the original's copy.
  if (cand.value.widened && !refInfo.widened && !widen) {
    await cand.value.release();
    return verifySequentially(open, opts, true);
  }
  // A verdict on fp32 copies says so, whatever it is.
  const widened = refInfo.widened ?? cand.value.widened;
  const said = (r: Result<VerifyStats>): Result<VerifyStats> => (r.ok && widened ? ok({ ...r.value, widened }) : r);
  try {
    if (!plan.ok) return plan;
    const sig = signatureReasons(refInfo, cand.value, plan.value.dims);
    if (sig.length) return said(failedWith(opts, plan.value, sig));
    // The optimized model runs on the feeds the original got through; where the original
    // failed, that failure is the verdict (as when the runs alternate).
    const candRun = await runFeeds(cand.value, plan.value.feeds.slice(0, refRun.outputs.length));
    if (candRun.error) return said(failedWith(opts, plan.value, [candRun.error.message]));
    if (refRun.error) return err(refRun.error.kind, refRun.error.message + defaultedHint(plan.value.defaulted));
    return said(ok(compareOutputs(refInfo.outputs, refRun.outputs, candRun.outputs, opts, plan.value)));
  } finally {
    await cand.value.release();
  }
}

/**
 * Checks that ORT can load and run the original on the first verification feed, with the
 * settings verification will use. Run before OUT is written, so a model ORT cannot check
 * leaves no output behind.
 */
export async function preflightOriginal(original: ModelSource, opts: VerifyOptions = {}): Promise<Result<void>> {
  const s = await createSession(original, { ...sessionOptions(opts), label: `original ${describe(original)}` });
  if (!s.ok) return s;
  try {
    const plan = verificationFeeds(s.value.inputs, opts, 1);
    if (!plan.ok) return plan;
    const r = await s.value.run(plan.value.feeds[0]!);
    return r.ok ? ok(undefined) : err(r.error.kind, r.error.message + defaultedHint(plan.value.defaulted));
  } finally {
    await s.value.release();
  }
}

const describe = (s: ModelSource) => ('path' in s ? s.path : 'model bytes');

/** The comparison itself, on open sessions (also used to compare backends on one model). */
export async function compareSessions(ref: Session, cand: Session, opts: VerifyOptions = {}): Promise<Result<VerifyStats>> {
  const plan = verificationFeeds(ref.inputs, opts, feedCount(opts));
  if (!plan.ok) return plan;
  const sig = signatureReasons(ref, cand, plan.value.dims);
  if (sig.length) return failedWith(opts, plan.value, sig);

  const refOut: Record<string, HostTensor>[] = [];
  const candOut: Record<string, HostTensor>[] = [];
  for (const feed of plan.value.feeds) {
    const r = await ref.run(feed);
    if (!r.ok) return err(r.error.kind, r.error.message + defaultedHint(plan.value.defaulted));
    const c = await cand.run(feed);
    if (!c.ok) return failedWith(opts, plan.value, [c.error.message]);
    refOut.push(r.value);
    candOut.push(c.value);
  }
  return ok(compareOutputs(ref.outputs, refOut, candOut, opts, plan.value));
}

const feedCount = (opts: VerifyOptions): number => opts.feeds?.length || (opts.runs ?? 3);

/** The fields every verdict carries. */
function verdictBase(opts: VerifyOptions, plan: FeedPlan) {
  return { seed: opts.seed ?? 0, runs: feedCount(opts), inputDims: plan.dims, defaulted: plan.defaulted, backend: opts.backend === 'web' ? 'ort-web-wasm' as const : 'ort-node' as const };
}

/** A verification that ran and failed before any output was compared. */
function failedWith(opts: VerifyOptions, plan: FeedPlan, reasons: string[]): Result<VerifyStats> {
  return ok({ outputs: [], pass: false, reasons, ...verdictBase(opts, plan) });
}

/** Outputs of one session on each feed, in order, up to its first failure. */
interface FeedRuns { outputs: Record<string, HostTensor>[]; error?: LrError }

async function runFeeds(s: Session, feeds: readonly Feeds[]): Promise<FeedRuns> {
  const outputs: Record<string, HostTensor>[] = [];
  for (const feed of feeds) {
    const r = await s.run(feed);
    if (!r.ok) return { outputs, error: r.error };
    outputs.push(r.value);
  }
  return { outputs };
}

/** Every output of the original against the optimized model's, over all feeds. */
function compareOutputs(
  refOutputs: readonly ValueInfo[], refOut: readonly Record<string, HostTensor>[], candOut: readonly Record<string, HostTensor>[],
  opts: VerifyOptions, plan: FeedPlan,
): VerifyStats {
  const tol: Tolerances = { ...DEFAULT_TOLERANCES, ...pickTolerances(opts) };
  const outputs: OutputStats[] = [];
  const reasons: string[] = [];
  for (const { name } of refOutputs) {
    const a = refOut.map((o) => o[name]!);
    const b = candOut.map((o) => o[name]!);
    const shapeBad = a.findIndex((t, k) => !sameDims(t.dims, b[k]!.dims));
    if (shapeBad >= 0) {
      reasons.push(`output ${name}: shape [${b[shapeBad]!.dims.join(',')}], original has [${a[shapeBad]!.dims.join(',')}]`);
      continue;
    }
    // Compared as one stack of all feeds (top-1 then counts every row), reported per feed.
    const ra = concat(a);
    const rb = concat(b);
    const s: OutputStats = { ...compareOutput(name, ra, rb, stackedDims(a), tol), dims: [...a[0]!.dims] };
    if (opts.outputs && !opts.outputs.includes(name)) {
      // Reported for information; only the outputs the user named decide.
      s.checked = false;
      s.pass = true;
      s.reasons = [];
    }
    const units = a.map((t) => samplesIn(t, opts.learned?.get(name)));
    if (units.reduce((x, y) => x + y, 0) > 1) s.worstFeed = worstFeed(name, ra, rb, a, units, tol);
    outputs.push(s);
    reasons.push(...s.reasons);
  }
  return { outputs, pass: reasons.length === 0, reasons, ...verdictBase(opts, plan) };
}

/**
 * Pooled figures can hide one input the model handles much worse: the feed with the lowest
 * cosine, from each feed's slice of the concatenated outputs (`perFeed` gives their sizes),
 * or the sample, each feed's slice cut in `units[k]` along axis 0.
 */
function worstFeed(name: string, ra: Float64Array, rb: Float64Array, perFeed: readonly HostTensor[], units: readonly number[], tol: Tolerances): OutputStats['worstFeed'] {
  let worst: OutputStats['worstFeed'];
  const split = units.some((u) => u > 1);
  let off = 0;
  let index = 0;
  perFeed.forEach((t, k) => {
    const u = units[k]!;
    const len = t.data.length / u;
    const dims = u > 1 ? [1, ...t.dims.slice(1)] : t.dims;
    for (let j = 0; j < u; j++, index++, off += len) {
      const { cosine, relL2 } = compareOutput(name, ra.subarray(off, off + len), rb.subarray(off, off + len), dims, tol);
      if (!worst || cosine < worst.cosine || Number.isNaN(cosine)) worst = { index, cosine, relL2 };
    }
  });
  return worst && split ? { ...worst, samples: true, of: index } : worst;
}

function pickTolerances(o: VerifyOptions): Partial<Tolerances> {
  const t: Partial<Tolerances> = {};
  if (o.atol !== undefined) t.atol = o.atol;
  if (o.rtol !== undefined) t.rtol = o.rtol;
  if (o.minCosine !== undefined) t.minCosine = o.minCosine;
  if (o.minTop1 !== undefined) t.minTop1 = o.minTop1;
  return t;
}

/** Inputs and outputs must agree by name and type, and the feeds must fit the candidate's fixed dims. */
function signatureReasons(ref: Pick<Session, 'inputs' | 'outputs'>, cand: Pick<Session, 'inputs' | 'outputs'>, dims: Record<string, number[]>): string[] {
  const reasons: string[] = [];
  const candIn = new Map(cand.inputs.map((i) => [i.name, i]));
  for (const i of ref.inputs) {
    const c = candIn.get(i.name);
    if (!c) { reasons.push(`input ${i.name} is missing from the optimized model`); continue; }
    if (c.type !== i.type) reasons.push(`input ${i.name}: optimized model expects ${c.type}, original ${i.type}`);
    const d = dims[i.name]!;
    const fits = c.shape.length === 0 || (c.shape.length === d.length && c.shape.every((x, a) => typeof x !== 'number' || x < 0 || x === d[a]));
    if (!fits) reasons.push(`input ${i.name}: optimized model expects [${c.shape.join(',')}], feeds are [${d.join(',')}]`);
  }
  const refIn = new Set(ref.inputs.map((i) => i.name));
  for (const c of cand.inputs) if (!refIn.has(c.name)) reasons.push(`optimized model has an extra input ${c.name}`);
  const refOutNames = new Set(ref.outputs.map((o) => o.name));
  const candOutNames = new Set(cand.outputs.map((o) => o.name));
  for (const o of refOutNames) if (!candOutNames.has(o)) reasons.push(`output ${o} is missing from the optimized model`);
  for (const o of candOutNames) if (!refOutNames.has(o)) reasons.push(`optimized model has an extra output ${o}`);
  return reasons;
}

function defaultedHint(d: readonly DefaultedDim[]): string {
  if (!d.length) return '';
  const list = d.map((x) => `${x.input}[${x.axis}]${x.symbol ? ` (${x.symbol})` : ''}`).join(', ');
  return ` — note: dynamic dims defaulted to 1: ${list}; set them with --shape NAME:DIMS`;
}

const sameDims = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

function concat(ts: readonly HostTensor[]): Float64Array {
  const parts = ts.map(toNumbers);
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** Dims of the feeds' outputs stacked along axis 0 (flat when scalar or ragged). */
function stackedDims(ts: readonly HostTensor[]): number[] {
  const first = ts[0]!.dims;
  const total = ts.reduce((a, t) => a + t.data.length, 0);
  if (first.length === 0 || ts.some((t) => !sameDims(t.dims.slice(1), first.slice(1)))) return [total];
  return [ts.reduce((a, t) => a + t.dims[0]!, 0), ...first.slice(1)];
}
