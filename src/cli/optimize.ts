/** `onnx-lr optimize IN OUT` and `onnx-lr plan IN`: the main job. */
import { LrError, unwrap } from '../errors.js';
import { modelInputs } from '../onnx/file.js';
import type { Budget } from '../optimize/budget.js';
import { DEFAULT_MIN_PARAMS, METHOD_CHOICES, type MethodChoice, type OptimizeOptions } from '../optimize/driver.js';
import { runOptimize, type PipelineConfig } from '../optimize/pipeline.js';
import { parsePlan, type PlanFile } from '../optimize/plan.js';
import { renderReport } from '../report/report.js';
import type { RankPolicy } from '../rewrite/rank-policy.js';
import { readSideInput } from '../util/bounds.js';
import { writeFileAtomic } from '../util/temp-files.js';
import { checkOutputs } from '../util/output-paths.js';
import type { ShapeOverrides, ValueOverrides } from '../verify/inputs.js';
import { expectPositionals, flag, num, parse, str, strs, type Options, type Parsed } from './args.js';
import { calibrationFrom, maxInputBytes, verificationDataFrom } from './calibration.js';
import { slowerWarning } from '../verify/latency.js';
import { feedOverrides } from './feeds.js';
import { createProgress, type Progress } from './progress.js';
import type { Io } from './io.js';

import { OPTIMIZE_HELP, PLAN_HELP } from './optimize-help.js';

export { OPTIMIZE_HELP, PLAN_HELP };

const COMMON: Options = {
  'target-params': { type: 'string' }, 'target-macs': { type: 'string' }, 'target-latency': { type: 'string' }, 'max-error': { type: 'string' }, save: { type: 'string' },
  calib: { type: 'string' }, 'calib-samples': { type: 'string' }, resize: { type: 'string' }, mean: { type: 'string' }, std: { type: 'string' },
  layout: { type: 'string' }, 'no-data-aware': { type: 'boolean' }, 'no-anchor': { type: 'boolean' }, plan: { type: 'string' }, 'layer-latency': { type: 'boolean' }, 'measure-all-rungs': { type: 'boolean' },
  stages: { type: 'string' },
  method: { type: 'string' }, energy: { type: 'string' }, 'rank-ratio': { type: 'string' }, vbmf: { type: 'boolean' },
  rank: { type: 'string' }, align: { type: 'string' }, exclude: { type: 'string' }, 'min-params': { type: 'string' },
  heaviest: { type: 'string' }, outputs: { type: 'string' }, seed: { type: 'string' }, shape: { type: 'string', multiple: true }, input: { type: 'string', multiple: true }, 'max-input-mb': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

const OPTIMIZE_ONLY: Options = {
  'verify-data': { type: 'string' }, 'verify-samples': { type: 'string' },
  'min-cosine': { type: 'string' }, atol: { type: 'string' }, rtol: { type: 'string' },
  'no-verify': { type: 'boolean' }, 'no-latency': { type: 'boolean' }, threads: { type: 'string' }, 'bench-web': { type: 'boolean' },
  report: { type: 'string' }, json: { type: 'boolean' }, 'all-layers': { type: 'boolean' }, 'external-data': { type: 'boolean' },
  force: { type: 'boolean' },
};

export const DEFAULT_ENERGY = 0.999;
export const DEFAULT_MIN_COSINE = 0.99;
/** With a budget and no --heaviest: the layers carrying this share of the MACs. */
export const DEFAULT_HEAVIEST_SHARE = 0.95;

/**
 * The cosine verification passes at: --min-cosine when given, else the one --max-error
 * cosine:C asked for (a run that allocated for 0.995 is judged at 0.995, not at the
 * default), else DEFAULT_MIN_COSINE.
 */
function verdictCosine(p: Parsed, budget: Budget | undefined): number {
  const given = num(p, 'min-cosine', { min: -1, max: 1 });
  if (given !== undefined) return given;
  return budget?.kind === 'error' && budget.cosine !== undefined ? budget.cosine : DEFAULT_MIN_COSINE;
}

function policyFrom(p: Parsed): RankPolicy {
  const chosen = ['energy', 'rank-ratio', 'vbmf', 'rank'].filter((k) => p.values[k] !== undefined);
  if (chosen.length > 1) throw new LrError('usage', `choose one of --energy, --rank-ratio, --vbmf, --rank (got ${chosen.map((c) => `--${c}`).join(', ')})`);
  const align = num(p, 'align', { min: 1, max: 4096, integer: true });
  const withAlign = (x: RankPolicy): RankPolicy => (align ? { ...x, align } : x);
  if (flag(p, 'vbmf')) return withAlign({ kind: 'vbmf' });
  const rank = num(p, 'rank', { min: 1, integer: true });
  if (rank !== undefined) return withAlign({ kind: 'fixed', rank });
  const ratio = num(p, 'rank-ratio', { min: 0, max: 1 });
  if (ratio !== undefined) {
    if (ratio <= 0) throw new LrError('usage', '--rank-ratio must be above 0');
    return withAlign({ kind: 'ratio', ratio });
  }
  const energy = num(p, 'energy', { min: 0, max: 1 }) ?? DEFAULT_ENERGY;
  if (energy <= 0) throw new LrError('usage', '--energy must be above 0');
  return withAlign({ kind: 'energy', energy });
}

function optionsFrom(p: Parsed): OptimizeOptions {
  const method = (str(p, 'method') ?? 'auto') as MethodChoice;
  if (!METHOD_CHOICES.includes(method)) throw new LrError('usage', `--method expects ${METHOD_CHOICES.slice(0, -1).join(', ')} or ${METHOD_CHOICES.at(-1)}, got "${method}"`);
  let exclude: RegExp | undefined;
  const ex = str(p, 'exclude');
  if (ex !== undefined) {
    try { exclude = new RegExp(ex); } catch (e) { throw new LrError('usage', `--exclude: ${(e as Error).message}`); }
  }
  let plan: PlanFile | undefined;
  const planPath = str(p, 'plan');
  if (planPath !== undefined) {
    // A regular file within the bound: a FIFO or a device as --plan would block or never end.
    const bytes = unwrap(readSideInput(planPath, 'plan', maxInputBytes(p)));
    let text: string;
    try { text = new TextDecoder().decode(bytes); } catch (e) { throw new LrError('unsupported', `plan ${planPath} cannot be read as text: ${(e as Error).message}`); }
    plan = parsePlan(text, planPath);
  }
  const heaviest = num(p, 'heaviest', { min: 1, integer: true });
  return {
    method, policy: policyFrom(p), exclude, plan,
    minParams: num(p, 'min-params', { min: 0, integer: true }) ?? DEFAULT_MIN_PARAMS,
    heaviest,
    // With a budget saving time, only where the time goes is measured unless --heaviest
    // says otherwise (dropped again for budgets that save params: pipelineConfig).
    ...(heaviest === undefined && budgetFrom(p) && { heaviestShare: DEFAULT_HEAVIEST_SHARE }),
    seed: num(p, 'seed', { min: 0, max: 2 ** 32 - 1, integer: true }) ?? 0,
  };
}

/** A terminal gets a live line (not with --json); a log gets a line every 10 s of a long run. */
function progressOn(io: Io, json: boolean): Progress {
  return io.live && !json ? createProgress(io.live, true) : createProgress((t) => io.err(t.replace(/\n$/, '')), false);
}

/** --target-params/--target-macs/--target-latency F or --max-error E (rel. L2, or cosine:C). */
function budgetFrom(p: Parsed): Budget | undefined {
  const given = ['target-params', 'target-macs', 'target-latency', 'max-error'].filter((k) => p.values[k] !== undefined);
  if (given.length > 1) throw new LrError('usage', `choose one budget (got ${given.map((g) => `--${g}`).join(', ')})`);
  for (const kind of ['params', 'macs', 'latency'] as const) {
    const f = num(p, `target-${kind}`, { min: 0, max: 1 });
    if (f !== undefined) return { kind, fraction: f };
  }
  const e = str(p, 'max-error');
  if (e === undefined) return undefined;
  const m = /^(?:(rel|cosine|top1):)?([0-9.eE+-]+)(%?)$/.exec(e.trim());
  const v = m ? Number(m[2]) / (m[3] ? 100 : 1) : NaN;
  if (!m || !Number.isFinite(v) || (m[3] && m[1] !== 'top1')) {
    throw new LrError('usage', `--max-error expects a relative L2 error (e.g. 0.1), cosine:C (e.g. cosine:0.99) or top1:P (e.g. top1:0.99 or top1:99%), got "${e}"`);
  }
  if (m[1] === 'top1') {
    if (v <= 0 || v > 1) throw new LrError('usage', '--max-error top1:P needs 0 < P <= 1 (or a percentage)');
    // First guess for the allocation's error budget; the search (error-search.ts) adjusts it.
    return { kind: 'error', err2: Math.max(2 * (1 - v), 1e-3), top1: v };
  }
  if (m[1] === 'cosine') {
    if (v <= 0 || v >= 1) throw new LrError('usage', '--max-error cosine:C needs 0 < C < 1');
    // For small errors 1 − cos ≈ ½‖Δy‖²/‖y‖².
    return { kind: 'error', err2: 2 * (1 - v), cosine: v };
  }
  if (v <= 0) throw new LrError('usage', '--max-error must be above 0');
  return { kind: 'error', err2: v * v };
}

function outputNames(p: Parsed): string[] | undefined {
  const s = str(p, 'outputs');
  if (s === undefined) return undefined;
  const names = s.split(',').map((x) => x.trim());
  if (names.some((n) => n === '')) throw new LrError('usage', `--outputs expects comma-separated output names, got "${s}"`);
  return [...new Set(names)];
}

/** `plan` prints decisions to apply as written (on any machine): without a budget it times rewrites only when asked. */
function pipelineConfig(p: Parsed, opts: OptimizeOptions, shapes: ShapeOverrides, values: ValueOverrides, shown: Progress, command: 'optimize' | 'plan' = 'optimize'): PipelineConfig {
  const budget = budgetFrom(p);
  if (budget && opts.plan && !opts.plan.sensitivity) throw new LrError('usage', '--plan with a budget needs a plan that carries sensitivity measurements (from onnx-lr plan, or optimize --report, run with a budget)');
  const stages = num(p, 'stages', { min: 1, max: 10, integer: true });
  const save = str(p, 'save');
  if (save !== undefined && save !== 'params' && save !== 'macs' && save !== 'latency') {
    throw new LrError('usage', `--save expects params, macs or latency, got "${save}"`);
  }
  if (save !== undefined && budget && budget.kind !== 'error') throw new LrError('usage', '--save goes with --max-error or no budget (the other budgets name what they save)');
  if (flag(p, 'no-verify') && str(p, 'verify-data') !== undefined) throw new LrError('usage', '--verify-data goes with verification: drop --no-verify');
  if (stages !== undefined && stages > 1 && !budget) throw new LrError('usage', '--stages needs a budget (--target-params, --target-macs, --target-latency or --max-error)');
  const layerLatency = flag(p, 'layer-latency');
  // Defaults never make a model slower (issue 18): where latency is measured, an error budget
  // saves latency, and a run without a budget (or plan) keeps only the rewrites measured faster.
  const measured = !flag(p, 'no-latency') && !flag(p, 'no-verify');
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
  const saves = budget?.kind === 'error' ? unit : budget?.kind;
  if (opts.heaviestShare !== undefined && saves === 'params') opts = { ...opts, heaviestShare: undefined };
  return {
    opts, budget, stages, shapes, values, dataAware: !flag(p, 'no-data-aware'), anchor: !flag(p, 'no-anchor'), outputs: outputNames(p),
    budgetUnit, layerLatency, latencyScreen, defaults, measureAllRungs: flag(p, 'measure-all-rungs'),
    calibration: calibrationFrom(p, shapes, values, opts.seed),
    verify: {
      enabled: !flag(p, 'no-verify'), minCosine: verdictCosine(p, budget),
      atol: num(p, 'atol', { min: 0 }), rtol: num(p, 'rtol', { min: 0 }), threads: num(p, 'threads', { min: 1, max: 256, integer: true }) ?? 1,
      latency: !flag(p, 'no-latency'), web: flag(p, 'bench-web'),
      data: verificationDataFrom(p, shapes, values, opts.seed),
    },
    save: { force: flag(p, 'force'), externalData: flag(p, 'external-data') },
    onProgress: (done, total, layer) => shown.layer(done, total, layer),
    onStage: (stage) => shown.stage(stage),
  };
}

export async function optimize(argv: readonly string[], io: Io): Promise<number> {
  const p = parse(argv, { ...COMMON, ...OPTIMIZE_ONLY }, 'optimize');
  if (flag(p, 'help')) { io.out(OPTIMIZE_HELP); return 0; }
  const [inPath, outPath] = expectPositionals(p, 2, 'optimize', 'IN OUT');
  const { shapes, values } = feedOverrides(strs(p, 'shape'), strs(p, 'input'), maxInputBytes(p));
  const shown = progressOn(io, flag(p, 'json'));
  const reportPath = str(p, 'report');
  const cfg: PipelineConfig = {
    ...pipelineConfig(p, optionsFrom(p), shapes, values, shown),
    // Before the long run (and without reading IN twice): OUT and the report may not replace
    // IN, a file IN reads, or each other.
    onLoaded: (loaded) => checkOutputs([
      { path: outPath, label: 'OUT', mayReplace: 'model' },
      ...(reportPath !== undefined ? [{ path: reportPath, label: '--report' }] : []),
    ], modelInputs(loaded), { force: flag(p, 'force') }),
  };
  const { report, pass } = await runOptimize(inPath, outPath, cfg);
  shown.end();
  // Said loudly (the report has it already): a compressed model that runs slower is no gain.
  for (const lat of [report.latency, report.latencyWeb]) {
    const slow = lat && slowerWarning(lat);
    if (slow) io.err(`onnx-lr: warning: ${slow}`);
  }
  // The verdict first: OUT is written, so a report that cannot be is not a reason to lose it.
  io.out(flag(p, 'json') ? JSON.stringify(report, null, 2) : renderReport(report, { allLayers: flag(p, 'all-layers') }));
  if (reportPath !== undefined) {
    try {
      writeFileAtomic(reportPath, [new TextEncoder().encode(JSON.stringify(report, null, 2) + '\n')]);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new LrError('io', why.includes(reportPath) ? `--report: ${why}` : `cannot write --report ${reportPath}: ${why}`);
    }
  }
  return pass ? 0 : 1;
}

export async function plan(argv: readonly string[], io: Io): Promise<number> {
  const p = parse(argv, COMMON, 'plan');
  if (flag(p, 'help')) { io.out(PLAN_HELP); return 0; }
  const [inPath] = expectPositionals(p, 1, 'plan', 'IN');
  const { shapes, values } = feedOverrides(strs(p, 'shape'), strs(p, 'input'), maxInputBytes(p));
  const opts = optionsFrom(p);
  const shown = progressOn(io, false);
  const cfg = pipelineConfig(p, opts, shapes, values, shown, 'plan');
  const { report, sensitivity } = await runOptimize(inPath, undefined, cfg);
  shown.end();
  const planFile: PlanFile = {
    version: 1, model: inPath, fingerprint: report.input.fingerprint, policy: report.policy, layers: report.layers, ...(sensitivity && { sensitivity }),
  };
  io.out(JSON.stringify(planFile, null, 2));
  return 0;
}
