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
import { writeFileAtomic } from '../util/fsio.js';
import { checkOutputs } from '../util/output-paths.js';
import type { ShapeOverrides, ValueOverrides } from '../verify/inputs.js';
import { expectPositionals, flag, num, parse, str, strs, type Options, type Parsed } from './args.js';
import { calibrationFrom, maxInputBytes, verificationDataFrom } from './calibration.js';
import { slowerWarning } from '../verify/latency.js';
import { feedOverrides } from './feeds.js';
import { createProgress, type Progress } from './progress.js';
import type { Io } from './io.js';

const RANK_OPTIONS = `Rank choice (one of; default --energy ${0.999}):
  --energy E          smallest rank keeping fraction E of the weight's energy (Σσ²)
  --rank-ratio R      keep about fraction R of each layer's parameters
  --vbmf              EVBMF estimate (Nakajima et al. 2013), no setting needed
  --rank N            the same rank N everywhere (clamped to each layer)
  --align N           round ranks up to a multiple of N (e.g. 8); default 16 when a budget
                      times candidates in ORT (--save latency, --target-latency,
                      --layer-latency), as ORT's blocked conv kernels need channel
                      counts on that grid; --align 1 for none
Layer selection:
  --method M          ${METHOD_CHOICES.join(' | ')} (default auto: SVD for Gemm/MatMul/1x1
                      conv, Tucker-2 for kxk conv)
  --exclude REGEX     leave layers whose node or weight name matches
  --min-params N      leave layers with fewer weight parameters (default ${DEFAULT_MIN_PARAMS})
  --heaviest N        of the layers left, consider only the N with the most MACs (params
                      when shapes are unknown): on a large model, budgets measure only
                      where the time goes
  --seed N            seed for randomized numerics and verification inputs (default 0)
Whole-model budgets (measure each layer's sensitivity on calibration inputs, then
allocate ranks globally, greedy on output error per saved unit):
  --target-params F   keep at most fraction F of the parameters (e.g. 0.5)
  --target-macs F     keep at most fraction F of the decomposable layers' MACs
  --target-latency F  aim at fraction F of the original latency: each candidate's chain
                      is timed against its layer in ORT, only faster ones are kept, and
                      the result is re-measured (the report says whether it was met)
  --layer-latency     with any budget: keep only candidates measured faster in ORT
  --stages K          reach the budget in K steps (MUSCO-style): after each stage the
                      factored layers are merged back, statistics and sensitivity are
                      measured again, and ranks can only go down (default 1, at most 10)
  --max-error E       compress as much as the output error allows: relative L2 E
                      (e.g. 0.05), cosine:C (e.g. cosine:0.995), or top1:P (top-1
                      agreement over each output's last axis on the calibration inputs,
                      e.g. top1:0.99 or top1:99%), checked in ORT
  --save U            what --max-error saves: params (default), macs, or latency (each
                      candidate timed in ORT as with --layer-latency)
  --outputs A,B       only these outputs count: error budgets, sensitivity and the
                      verification verdict judge them alone (the others are still
                      computed, and reported as not checked); default all outputs
Calibration data (data-aware decomposition is on when --calib is given):
  --calib PATH        .npy (samples on the first axis), .npz (one array per input),
                      a folder of them, or a folder of .png/.jpg images
  --calib-samples N   use at most N samples (default 64)
  --resize HxW        image size (default: the input's static H, W); these image options
                      also apply to --verify-data
  --mean R,G,B --std R,G,B   image normalisation after scaling to [0,1]
  --layout nchw|nhwc  image tensor layout (default nchw)
  --no-data-aware     use calibration data for budgets only, decompose weight-only
  --no-anchor         fit each layer to the original model's inputs alone, instead of
                      anchored: by default, with --calib, layers are fitted in
                      topological waves to what the original computes from what the
                      already compressed layers feed them (anchored fits add a bias to
                      layers that had none)
Shapes and inputs:
  --shape NAME:DIMS   concrete dims for a dynamic input, e.g. x:1x3x640x640 (repeatable)
  --input NAME:FILE   a .npy value for an input (repeatable)
  --max-input-mb N    largest data file, plan, decoded array or image, in MiB (default 1024)`;

export const OPTIMIZE_HELP = `Usage: onnx-lr optimize IN OUT [options]

Rewrites Gemm/MatMul layers with a constant weight into SVD pairs and Conv layers into
Tucker-2 or CP chains, keeping each rewrite only when it lowers both parameters and
MACs. Writes OUT atomically (IN is never modified), then loads IN and OUT in ONNX Runtime
with seeded random inputs (or --verify-data), compares the outputs, measures latency
and prints a before/after table. Exit code 0 when the check passes, 1 when it fails (OUT is still
written), 2 for bad input.

${RANK_OPTIONS}
  --plan FILE         apply the decisions of a plan (from 'onnx-lr plan') exactly; with a
                      budget, reuse the plan's cached sensitivity measurements instead
                      (a budgeted run's --report carries them too); layers the plan
                      lacks are measured, those the filters now leave out dropped
Verification:
  --verify-data PATH  compare on these held-out inputs instead of 3 seeded random ones
                      (read like --calib, with the same image options; keep it apart
                      from the calibration data)
  --verify-samples N  use at most N of them (default 16)
  --min-cosine C      pass when every checked output's cosine similarity is at least C
                      (default: C of --max-error cosine:C, else 0.99)
  --atol A --rtol R   also require |opt - orig| <= A + R*|orig| elementwise (Polygraphy style)
  --no-verify         skip the ORT comparison and latency
  --no-latency        compare outputs but do not measure latency
  --threads N         ORT intra-op threads for verification and latency (default 1)
  --bench-web         also measure latency in onnxruntime-web's wasm backend
Output:
  --report FILE       write the full report as JSON
  --json              print the JSON report instead of the table
  --all-layers        list skipped layers with their reasons in the table
  --external-data     store OUT's large tensors in OUT.<hash>.data beside OUT (named
                      by its content; the previous OUT's data file is removed)
  --force             allow OUT to be IN and replace it (never one of IN's data files,
                      nor the --report file)
  -h, --help          this help`;

export const PLAN_HELP = `Usage: onnx-lr plan IN [options] > plan.json

Prints the per-layer decisions optimize would make (pass, method, ranks, expected params
and MACs, weight error) as JSON, without writing a model. Edit it and apply it exactly
with 'onnx-lr optimize IN OUT --plan plan.json'.

${RANK_OPTIONS}
  --plan FILE         reuse a plan's (or a budgeted optimize --report's) cached
                      sensitivity measurements (with a budget); layers it lacks are
                      measured
  -h, --help          this help`;

const COMMON: Options = {
  'target-params': { type: 'string' }, 'target-macs': { type: 'string' }, 'target-latency': { type: 'string' }, 'max-error': { type: 'string' }, save: { type: 'string' },
  calib: { type: 'string' }, 'calib-samples': { type: 'string' }, resize: { type: 'string' }, mean: { type: 'string' }, std: { type: 'string' },
  layout: { type: 'string' }, 'no-data-aware': { type: 'boolean' }, 'no-anchor': { type: 'boolean' }, plan: { type: 'string' }, 'layer-latency': { type: 'boolean' },
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
  return {
    method, policy: policyFrom(p), exclude, plan,
    minParams: num(p, 'min-params', { min: 0, integer: true }) ?? DEFAULT_MIN_PARAMS,
    heaviest: num(p, 'heaviest', { min: 1, integer: true }),
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

function pipelineConfig(p: Parsed, opts: OptimizeOptions, shapes: ShapeOverrides, values: ValueOverrides, shown: Progress): PipelineConfig {
  const budget = budgetFrom(p);
  if (budget && opts.plan && !opts.plan.sensitivity) throw new LrError('usage', '--plan with a budget needs a plan that carries sensitivity measurements (from onnx-lr plan, or optimize --report, run with a budget)');
  const stages = num(p, 'stages', { min: 1, max: 10, integer: true });
  const save = str(p, 'save');
  if (save !== undefined && save !== 'params' && save !== 'macs' && save !== 'latency') {
    throw new LrError('usage', `--save expects params, macs or latency, got "${save}"`);
  }
  if (save !== undefined && budget?.kind !== 'error') throw new LrError('usage', '--save goes with --max-error (the other budgets name what they save)');
  if (flag(p, 'no-verify') && str(p, 'verify-data') !== undefined) throw new LrError('usage', '--verify-data goes with verification: drop --no-verify');
  if (stages !== undefined && stages > 1 && !budget) throw new LrError('usage', '--stages needs a budget (--target-params, --target-macs, --target-latency or --max-error)');
  return {
    opts, budget, stages, shapes, values, dataAware: !flag(p, 'no-data-aware'), anchor: !flag(p, 'no-anchor'), outputs: outputNames(p),
    budgetUnit: save, layerLatency: flag(p, 'layer-latency'),
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
  // Said loudly, and kept in the report: a compressed model that runs slower is no gain.
  for (const lat of [report.latency, report.latencyWeb]) {
    const slow = lat && slowerWarning(lat);
    if (slow) { report.notes.push(`warning: ${slow}`); io.err(`onnx-lr: warning: ${slow}`); }
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
  const cfg = pipelineConfig(p, opts, shapes, values, shown);
  const { report, sensitivity } = await runOptimize(inPath, undefined, cfg);
  shown.end();
  const planFile: PlanFile = {
    version: 1, model: inPath, fingerprint: report.input.fingerprint, policy: report.policy, layers: report.layers, ...(sensitivity && { sensitivity }),
  };
  io.out(JSON.stringify(planFile, null, 2));
  return 0;
}
