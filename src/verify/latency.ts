/**
 * Latency of the original vs the optimized model, measured the way the runtime notes ask:
 * same session options for both, ≥ 3 warm-up runs each, then interleaved timed runs
 * (order alternating A B / B A so drift and cache effects hit both equally), reporting
 * p10 / median / p90.
 *
 * Stopping rule: at least `minRuns` timed runs of each model, then keep going until the
 * timed runs of both together took `minSeconds`, but never more than `maxRuns` each.
 * A 0.05 ms model thus gets thousands of runs, a 200 ms model exactly `minRuns`.
 * `maxSeconds` bounds slow models instead: once the timed runs took that long, timing stops
 * after `fewestRuns` runs each (a 450 ms conv at 512² needs no 15 runs to be told from a
 * chain that takes 100 ms, and budgets time hundreds of them).
 */
import { err, ok, type Result } from '../errors.js';
import { buildFeeds, type ShapeOverrides, type ValueOverrides } from './inputs.js';
import { firstLine, type Backend, type ModelSource, type OptLevel, type Session } from './session.js';
import type { Feeds } from './tensor.js';
import { keptInsideAll, openTimed } from './kept-outputs.js';

export interface LatencyOptions {
  /** intraOpNumThreads (node backend); default 1. */
  threads?: number;
  /** Default 'node'. */
  backend?: Backend;
  /** Default 20. */
  minRuns?: number;
  /** Default 1. */
  minSeconds?: number;
  /** Default 5000. */
  maxRuns?: number;
  /** Stop once the timed runs took this long and each model ran `fewestRuns` times (default: no bound). */
  maxSeconds?: number;
  /** The floor under maxSeconds (default 5, at most minRuns). */
  fewestRuns?: number;
  /** Default 3 (fewer is raised to 3: first runs allocate and pick kernels). */
  warmup?: number;
  /**
   * Warm-up stops once its runs took this long, after one run of each (default: no bound):
   * a layer at high resolution is warm after one run, and three cost seconds.
   */
  warmupSeconds?: number;
  /** Inputs for every run; default: one seeded random feed (seed 0, `shapes`). */
  feeds?: Feeds;
  shapes?: ShapeOverrides;
  /** Fixed input values (from --input), used when `feeds` is not given. */
  values?: ValueOverrides;
  graphOptimizationLevel?: OptLevel;
  /** Monotonic clock in ns; default process.hrtime.bigint (tests inject one to time fake sessions). */
  clock?: () => bigint;
}

export interface Percentiles { p10: number; p50: number; p90: number }

export interface LatencyStats {
  originalMs: Percentiles;
  optimizedMs: Percentiles;
  /** original p50 / optimized p50: > 1 means the optimized model is faster. */
  speedup: number;
  /** Timed runs per model. */
  runs: number;
  backend: Backend;
  threads: number;
  /**
   * Whether both models were timed with their outputs kept inside ORT (kept-outputs.ts: the
   * copy of each output into JS, the same for both, not timed); false when a model is over
   * 512 MiB or has external data (kept-outputs.ts MAX_KEPT_BYTES), or ORT refused a copy.
   */
  outputsKept: boolean;
}

export async function measureLatency(original: ModelSource, optimized: ModelSource, opts: LatencyOptions = {}): Promise<Result<LatencyStats>> {
  const backend = opts.backend ?? 'node';
  const threads = opts.threads ?? 1;
  const so = { backend, intraOpNumThreads: threads, graphOptimizationLevel: opts.graphOptimizationLevel ?? 'all' } as const;
  const plain = [original, optimized];
  const opened = await openTimed(keptInsideAll(plain), () => plain, so, ['original', 'optimized']);
  if (!opened.ok) return opened;
  const { sessions, outputsKept } = opened.value;
  const [a, b] = sessions as [Session, Session];
  try {
    const r = await timePair(a, b, opts);
    return r.ok ? ok({ ...r.value, backend, threads, outputsKept }) : r;
  } finally {
    await a.release();
    await b.release();
  }
}

/** Interleaved timing of two open sessions on the same feeds. */
export async function timePair(
  a: Session, b: Session, opts: LatencyOptions = {},
): Promise<Result<{ originalMs: Percentiles; optimizedMs: Percentiles; speedup: number; runs: number }>> {
  const r = await timeSessions([a, b], opts);
  if (!r.ok) return r;
  const [originalMs, optimizedMs] = r.value.ms as [Percentiles, Percentiles];
  return ok({ originalMs, optimizedMs, speedup: originalMs.p50 / optimizedMs.p50, runs: r.value.runs });
}

/**
 * Interleaved timing of several open sessions on the same feeds (the first one's inputs
 * define them): each round runs every session once, starting one further along each round
 * (two sessions: A B, then B A), so drift and cache effects hit all alike. The stopping
 * rule counts rounds as timePair counts runs, and the time spent over all sessions: a
 * layer's original and all its candidate chains share one warm-up and one time budget.
 */
export async function timeSessions(sessions: readonly Session[], opts: LatencyOptions = {}): Promise<Result<{ ms: Percentiles[]; runs: number }>> {
  const first = sessions[0];
  if (!first) return ok({ ms: [], runs: 0 });
  let feeds = opts.feeds;
  if (!feeds) {
    const plan = buildFeeds(first.inputs, { seed: 0, ...(opts.shapes && { shapes: opts.shapes }), ...(opts.values && { values: opts.values }) });
    if (!plan.ok) return plan;
    feeds = plan.value.feeds[0]!;
  }
  const runs: (() => Promise<void>)[] = [];
  for (const s of sessions) {
    const r = s.prepare(feeds);
    if (!r.ok) return r;
    runs.push(r.value);
  }
  const n = runs.length;
  const minRuns = Math.max(1, opts.minRuns ?? 20);
  const maxRuns = Math.max(minRuns, opts.maxRuns ?? 5000);
  const budgetNs = BigInt(Math.round((opts.minSeconds ?? 1) * 1e9));
  const warmup = Math.max(3, opts.warmup ?? 3);
  const capNs = opts.maxSeconds !== undefined ? BigInt(Math.round(opts.maxSeconds * 1e9)) : undefined;
  const fewest = Math.min(minRuns, Math.max(1, opts.fewestRuns ?? 5));
  const clock = opts.clock ?? (() => process.hrtime.bigint());
  const times: number[][] = runs.map(() => []);
  let rounds = 0;
  try {
    const warmCap = opts.warmupSeconds !== undefined ? BigInt(Math.round(opts.warmupSeconds * 1e9)) : undefined;
    const warm0 = clock();
    for (let i = 0; i < warmup; i++) {
      if (i > 0 && warmCap !== undefined && clock() - warm0 >= warmCap) break;
      for (const run of runs) await run();
    }
    let spent = 0n;
    while (rounds < maxRuns && (rounds < minRuns || spent < budgetNs)) {
      if (capNs !== undefined && rounds >= fewest && spent >= capNs) break;
      for (let i = 0; i < n; i++) {
        const k = (rounds + i) % n;
        const t0 = clock();
        await runs[k]!();
        const dt = clock() - t0;
        spent += dt;
        times[k]!.push(Number(dt) / 1e6);
      }
      rounds++;
    }
  } catch (e) {
    return err('verify-mismatch', `ORT failed while timing: ${firstLine(e)}`);
  }
  return ok({ ms: times.map(percentiles), runs: rounds });
}

/** p10/p50/p90 with linear interpolation between order statistics (numpy's default). */
export function percentiles(xs: readonly number[]): Percentiles {
  const s = [...xs].sort((x, y) => x - y);
  const q = (p: number) => {
    if (s.length === 0) return NaN;
    const pos = p * (s.length - 1);
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, s.length - 1);
    return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
  };
  return { p10: q(0.1), p50: q(0.5), p90: q(0.9) };
}

/**
 * A warning when the optimized model runs clearly slower than the original: its median
 * more than 2% above the original's, and even its fast runs (p10) slower than the
 * original's median, so noise alone does not trip it.
 */
export function slowerWarning(l: LatencyStats): string | undefined {
  const a = l.originalMs;
  const o = l.optimizedMs;
  if (!(o.p50 > a.p50 * 1.02 && o.p10 > a.p50)) return undefined;
  const where = l.backend === 'web' ? 'ORT-web (wasm)' : 'ORT-node';
  return `OUT runs slower than IN in ${where}: p50 ${o.p50.toFixed(3)} ms against ${a.p50.toFixed(3)} ms (${l.speedup.toFixed(2)}x). `
    + 'Fewer MACs is not fewer milliseconds: the default run and --max-error keep only rewrites measured faster per layer (not with --save params, --no-latency or --plan), and layer times do not add up exactly';
}
