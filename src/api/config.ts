/**
 * Typed settings → the pipeline's configuration, with the defaults: the one place where
 * `onnx-lr optimize`/`plan` and the library's optimize()/plan() become a PipelineConfig.
 */
import { WEIGHTS_MODES, type WeightsMode } from '../rewrite/quantize-factors.js';
import { LrError } from '../errors.js';
import type { Budget } from '../optimize/budget.js';
import { METHOD_CHOICES, type OptimizeOptions } from '../optimize/driver.js';
import type { PipelineConfig } from '../optimize/pipeline.js';
import type { PlanFile } from '../optimize/plan.js';
import type { RankPolicy } from '../rewrite/rank-policy.js';
import { budgetOf } from './budget-setting.js';
import { checkNumber, givenFlags } from './check.js';
import { DEFAULT_ENERGY, DEFAULT_HEAVIEST_SHARE, DEFAULT_METHOD, DEFAULT_MIN_COSINE, DEFAULT_MIN_PARAMS, DEFAULT_SEED, DEFAULT_THREADS } from './defaults.js';
import { readPlanFile } from './plan-file.js';
import type { OptimizeSettings } from './settings.js';

export type Command = 'optimize' | 'plan';

/** What the settings do not say: data readers and where a run reports its progress. */
export interface RunHooks {
  calibration?: PipelineConfig['calibration'];
  verificationData?: PipelineConfig['verify']['data'];
  onLoaded?: PipelineConfig['onLoaded'];
}

/**
 * The cosine verification passes at: minCosine when given, else the one --max-error
 * cosine:C asked for (a run that allocated for 0.995 is judged at 0.995, not at the
 * default), else DEFAULT_MIN_COSINE.
 */
function verdictCosine(s: OptimizeSettings, budget: Budget | undefined): number {
  const given = checkNumber('min-cosine', s.minCosine, { min: -1, max: 1 });
  if (given !== undefined) return given;
  return budget?.kind === 'error' && budget.cosine !== undefined ? budget.cosine : DEFAULT_MIN_COSINE;
}

function policyOf(s: OptimizeSettings): RankPolicy {
  const chosen = givenFlags({ energy: s.energy, 'rank-ratio': s.rankRatio, vbmf: s.vbmf, rank: s.rank });
  if (chosen.length > 1) throw new LrError('usage', `choose one of --energy, --rank-ratio, --vbmf, --rank (got ${chosen.join(', ')})`);
  const align = checkNumber('align', s.align, { min: 1, max: 4096, integer: true });
  const withAlign = (x: RankPolicy): RankPolicy => (align ? { ...x, align } : x);
  if (s.vbmf) return withAlign({ kind: 'vbmf' });
  const rank = checkNumber('rank', s.rank, { min: 1, integer: true });
  if (rank !== undefined) return withAlign({ kind: 'fixed', rank });
  const ratio = checkNumber('rank-ratio', s.rankRatio, { min: 0, max: 1 });
  if (ratio !== undefined) {
    if (ratio <= 0) throw new LrError('usage', '--rank-ratio must be above 0');
    return withAlign({ kind: 'ratio', ratio });
  }
  const energy = checkNumber('energy', s.energy, { min: 0, max: 1 }) ?? DEFAULT_ENERGY;
  if (energy <= 0) throw new LrError('usage', '--energy must be above 0');
  return withAlign({ kind: 'energy', energy });
}

function excludeOf(ex: RegExp | string | undefined): RegExp | undefined {
  if (ex === undefined || ex instanceof RegExp) return ex;
  try { return new RegExp(ex); } catch (e) { throw new LrError('usage', `--exclude: ${(e as Error).message}`); }
}

function planOf(plan: PlanFile | string | undefined, maxInputMb: number | undefined): PlanFile | undefined {
  if (typeof plan !== 'string') return plan;
  const mb = checkNumber('max-input-mb', maxInputMb, { min: 1, max: 2 ** 32, integer: true });
  return readPlanFile(plan, mb === undefined ? undefined : mb * 2 ** 20);
}

/** What the user asked for of the rewrite itself (driver.ts OptimizeOptions), with defaults. */
export function optionsOf(s: OptimizeSettings, budget: Budget | undefined): OptimizeOptions {
  const method = s.method ?? DEFAULT_METHOD;
  if (!METHOD_CHOICES.includes(method)) throw new LrError('usage', `--method expects ${METHOD_CHOICES.slice(0, -1).join(', ')} or ${METHOD_CHOICES.at(-1)}, got "${method}"`);
  const exclude = excludeOf(s.exclude);
  const plan = planOf(s.plan, s.maxInputMb);
  const heaviest = checkNumber('heaviest', s.heaviest, { min: 1, integer: true });
  return {
    method, policy: policyOf(s), exclude, plan,
    minParams: checkNumber('min-params', s.minParams, { min: 0, integer: true }) ?? DEFAULT_MIN_PARAMS,
    heaviest,
    // With a budget saving time, only where the time goes is measured unless --heaviest
    // says otherwise (dropped again for budgets that save params: pipelineConfig).
    ...(heaviest === undefined && budget && { heaviestShare: DEFAULT_HEAVIEST_SHARE }),
    seed: checkNumber('seed', s.seed, { min: 0, max: 2 ** 32 - 1, integer: true }) ?? DEFAULT_SEED,
    ...(s.compareLimit !== undefined && { compareWork: checkNumber('compare-limit', s.compareLimit, { min: 0 })! }),
  };
}

function weightsOf(w: string): WeightsMode {
  if (!(WEIGHTS_MODES as readonly string[]).includes(w)) throw new LrError('usage', `--weights expects fp32, fp16 or int8, got "${w}"`);
  return w as WeightsMode;
}

function outputsOf(names: readonly string[] | undefined): string[] | undefined {
  if (names === undefined) return undefined;
  if (names.some((n) => n === '')) throw new LrError('usage', `--outputs expects comma-separated output names, got "${names.join(',')}"`);
  return [...new Set(names)];
}

/** --compute: only float32 (a float16 graph computed in float32), or absent. */
function computeOf(v: unknown): boolean {
  if (v === undefined) return false;
  if (v !== 'float32') throw new LrError('usage', `--compute expects float32, got "${String(v)}"`);
  return true;
}

/**
 * The pipeline's configuration. `plan` prints decisions to apply as written (on any
 * machine): without a budget it times rewrites only when asked.
 */
export function pipelineConfig(s: OptimizeSettings, command: Command, hooks: RunHooks = {}): PipelineConfig {
  const budget = budgetOf(s);
  let opts = optionsOf(s, budget);
  if (budget && opts.plan && !opts.plan.sensitivity) throw new LrError('usage', '--plan with a budget needs a plan that carries sensitivity measurements (from onnx-lr plan, or optimize --report, run with a budget)');
  const stages = checkNumber('stages', s.stages, { min: 1, max: 10, integer: true });
  const save = s.save;
  if (save !== undefined && save !== 'params' && save !== 'macs' && save !== 'latency') {
    throw new LrError('usage', `--save expects params, macs or latency, got "${String(save)}"`);
  }
  if (save !== undefined && budget && budget.kind !== 'error') throw new LrError('usage', '--save goes with --max-error or no budget (the other budgets name what they save)');
  const verifying = s.verify !== false;
  if (!verifying && s.verifyData !== undefined) throw new LrError('usage', '--verify-data goes with verification: drop --no-verify');
  if (stages !== undefined && stages > 1 && !budget) throw new LrError('usage', '--stages needs a budget (--target-params, --target-macs, --target-latency or --max-error)');
  const layerLatency = s.layerLatency === true;
  // Defaults never make a model slower (issue 18): where latency is measured, an error budget
  // saves latency, and a run without a budget (or plan) keeps only the rewrites measured faster.
  const measured = s.latency !== false && verifying;
  const unit = save ?? (measured ? 'latency' : 'params');
  const budgetUnit = budget?.kind === 'error' ? unit : undefined;
  const screenAsked = layerLatency || (command === 'plan' ? save === 'latency' : unit === 'latency');
  const latencyScreen = !budget && !opts.plan && screenAsked;
  const defaults: string[] = [];
  if (save === undefined && budget?.kind === 'error') {
    defaults.push(measured
      ? '--max-error saves latency by default: each candidate\'s chain is timed against its layer in ORT and only faster ones are kept (--save params for the smallest model instead)'
      : '--max-error saves params: latency is not measured (--no-latency or --no-verify; --save latency times candidates anyway)');
  }
  if (save === undefined && !budget && !opts.plan && !latencyScreen && command === 'optimize') {
    defaults.push('rewrites kept when they lower params and MACs, not timed in ORT: latency is not measured (--no-latency or --no-verify; --save latency times them anyway)');
  }
  // The automatic --heaviest follows where the time goes: a budget that saves params needs
  // every layer (on rec the light-MAC MatMuls hold the params it can save).
  const saves = budget === undefined || budget.kind === 'error' ? unit : budget.kind;
  if (opts.heaviestShare !== undefined && saves === 'params') opts = { ...opts, heaviestShare: undefined };
  opts = { ...opts, saves };
  return {
    opts, budget, stages, shapes: s.shapes ?? {}, values: s.values ?? {}, dataAware: s.dataAware !== false, anchor: s.anchor !== false, activationFit: s.activationFit === true, refine: checkNumber('refine', s.refine, { min: 0, max: 100000, integer: true }) ?? 0, outputAware: s.outputAware ?? 'gradients', narrowReorder: s.narrowReorder !== false, computeFloat32: computeOf(s.compute), outputs: outputsOf(s.outputs),
    budgetUnit, layerLatency, latencyScreen, defaults, measureAllRungs: s.measureAllRungs === true, allMethods: s.allMethods === true,
    workThreads: checkNumber('work-threads', s.workThreads, { min: 1, max: 256, integer: true }) ?? 1,
    maxMemoryBytes: checkNumber('max-memory', s.maxMemoryBytes, { min: 1 }),
    calibration: hooks.calibration,
    verify: {
      enabled: verifying, minCosine: verdictCosine(s, budget),
      atol: checkNumber('atol', s.atol, { min: 0 }), rtol: checkNumber('rtol', s.rtol, { min: 0 }),
      threads: checkNumber('threads', s.threads, { min: 1, max: 256, integer: true }) ?? DEFAULT_THREADS,
      latency: s.latency !== false, web: s.benchWeb === true,
      data: hooks.verificationData,
    },
    save: { force: s.force === true, externalData: s.externalData === true },
    ...(s.weights !== undefined && { weights: weightsOf(s.weights) }),
    onProgress: s.onProgress, onStage: s.onStage, onLoaded: hooks.onLoaded,
  };
}
