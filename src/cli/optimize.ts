/** `onnx-lr optimize IN OUT` and `onnx-lr plan IN`: the main job. */
import { pipelineConfig, type Command } from '../api/config.js';
import { dataHooks } from '../api/data.js';
import { DEFAULT_SEED } from '../api/defaults.js';
import { readPlanFile } from '../api/plan-file.js';
import { planFileOf } from '../api/plan.js';
import type { OptimizeSettings } from '../api/settings.js';
import { requireWebBackend } from '../api/web-backend.js';
import { LrError } from '../errors.js';
import { modelInputs } from '../onnx/file.js';
import type { MethodChoice } from '../optimize/driver.js';
import { runOptimize, type PipelineConfig } from '../optimize/pipeline.js';
import { renderReport } from '../report/report.js';
import { renderHtmlReport, writeHtmlReport } from '../report/html-report.js';
import { writeFileAtomic } from '../util/temp-files.js';
import { checkOutputs, fileKey } from '../util/output-paths.js';
import type { ShapeOverrides, ValueOverrides } from '../verify/inputs.js';
import { expectPositionals, flag, num, parse, str, strs, type Options, type Parsed } from './args.js';
import { dataSettingsFrom, maxInputBytes } from './calibration.js';
import { slowerWarning } from '../verify/latency.js';
import { feedOverrides } from './feeds.js';
import { createProgress, type Progress } from './progress.js';
import type { Io } from './io.js';
import { accessSync, constants, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import type { CommandLine } from '../optimize/write-verify.js';

import { OPTIMIZE_HELP, PLAN_HELP } from './optimize-help.js';

export { OPTIMIZE_HELP, PLAN_HELP };

const COMMON: Options = {
  'target-params': { type: 'string' }, 'target-macs': { type: 'string' }, 'target-latency': { type: 'string' }, 'max-error': { type: 'string' }, save: { type: 'string' },
  calib: { type: 'string' }, 'calib-samples': { type: 'string' }, resize: { type: 'string' }, mean: { type: 'string' }, std: { type: 'string' },
  layout: { type: 'string' }, 'no-data-aware': { type: 'boolean' }, 'no-anchor': { type: 'boolean' }, 'activation-fit': { type: 'boolean' }, refine: { type: 'string' }, 'output-aware': { type: 'boolean' }, 'no-output-aware': { type: 'boolean' }, 'no-narrow-reorder': { type: 'boolean' }, compute: { type: 'string' }, plan: { type: 'string' }, 'layer-latency': { type: 'boolean' }, 'measure-all-rungs': { type: 'boolean' }, 'all-methods': { type: 'boolean' }, 'compare-limit': { type: 'string' },
  stages: { type: 'string' },
  method: { type: 'string' }, energy: { type: 'string' }, 'rank-ratio': { type: 'string' }, vbmf: { type: 'boolean' },
  rank: { type: 'string' }, align: { type: 'string' }, exclude: { type: 'string' }, 'min-params': { type: 'string' },
  heaviest: { type: 'string' }, outputs: { type: 'string' }, seed: { type: 'string' }, shape: { type: 'string', multiple: true }, input: { type: 'string', multiple: true }, 'max-input-mb': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

const OPTIMIZE_ONLY: Options = {
  'verify-data': { type: 'string' }, 'verify-samples': { type: 'string' },
  'min-cosine': { type: 'string' }, atol: { type: 'string' }, rtol: { type: 'string' },
  'no-verify': { type: 'boolean' }, 'no-latency': { type: 'boolean' }, threads: { type: 'string' }, 'work-threads': { type: 'string' }, 'bench-web': { type: 'boolean' }, weights: { type: 'string' },
  report: { type: 'string' }, html: { type: 'string' }, json: { type: 'boolean' }, 'all-layers': { type: 'boolean' }, 'external-data': { type: 'boolean' },
  force: { type: 'boolean' },
};

function outputNames(p: Parsed): string[] | undefined {
  const s = str(p, 'outputs');
  if (s === undefined) return undefined;
  const names = s.split(',').map((x) => x.trim());
  if (names.some((n) => n === '')) throw new LrError('usage', `--outputs expects comma-separated output names, got "${s}"`);
  return [...new Set(names)];
}

/** --output-aware (also finite differences), --no-output-aware (off), or neither (the default: gradients). */
function outputAwareOf(p: Parsed): boolean | undefined {
  const on = flag(p, 'output-aware');
  const off = flag(p, 'no-output-aware');
  if (on && off) throw new LrError('usage', '--output-aware and --no-output-aware contradict each other');
  return on ? true : off ? false : undefined;
}

/** The options as typed settings (src/api/settings.ts): the defaults and the checks across options are src/api/config.ts's. */
/** Default --work-threads at most (ORT's intra-op scaling flattens past a few threads on one model run). */
const MAX_WORK_THREADS = 8;

function settingsFrom(p: Parsed, shapes: ShapeOverrides, values: ValueOverrides, shown: Progress, maxMemoryBytes: number | undefined): OptimizeSettings {
  const planPath = str(p, 'plan');
  return {
    method: str(p, 'method') as MethodChoice | undefined, exclude: str(p, 'exclude'),
    plan: planPath === undefined ? undefined : readPlanFile(planPath, maxInputBytes(p)),
    heaviest: num(p, 'heaviest', { min: 1, integer: true }),
    energy: num(p, 'energy', { min: 0, max: 1 }), rankRatio: num(p, 'rank-ratio', { min: 0, max: 1 }), vbmf: flag(p, 'vbmf') || undefined,
    rank: num(p, 'rank', { min: 1, integer: true }), align: num(p, 'align', { min: 1, max: 4096, integer: true }),
    minParams: num(p, 'min-params', { min: 0, integer: true }), seed: num(p, 'seed', { min: 0, max: 2 ** 32 - 1, integer: true }),
    targetParams: num(p, 'target-params', { min: 0, max: 1 }), targetMacs: num(p, 'target-macs', { min: 0, max: 1 }),
    targetLatency: num(p, 'target-latency', { min: 0, max: 1 }), maxError: str(p, 'max-error'),
    save: str(p, 'save') as OptimizeSettings['save'], stages: num(p, 'stages', { min: 1, max: 10, integer: true }), outputs: outputNames(p),
    layerLatency: flag(p, 'layer-latency'), measureAllRungs: flag(p, 'measure-all-rungs'), allMethods: flag(p, 'all-methods'), compareLimit: num(p, 'compare-limit', { min: 0 }), dataAware: !flag(p, 'no-data-aware'), anchor: !flag(p, 'no-anchor'), activationFit: flag(p, 'activation-fit'), refine: num(p, 'refine'), outputAware: outputAwareOf(p), narrowReorder: !flag(p, 'no-narrow-reorder'), compute: str(p, 'compute') as OptimizeSettings['compute'],
    shapes, values, verifyData: str(p, 'verify-data'),
    verify: !flag(p, 'no-verify'), latency: !flag(p, 'no-latency'), minCosine: num(p, 'min-cosine', { min: -1, max: 1 }),
    atol: num(p, 'atol', { min: 0 }), rtol: num(p, 'rtol', { min: 0 }), threads: num(p, 'threads', { min: 1, max: 256, integer: true }),
    // Runs that only compute values (statistics, errors) use the machine: their time is
    // most of a budgeted run, and no figure depends on it (timings keep --threads).
    workThreads: num(p, 'work-threads', { min: 1, max: 256, integer: true }) ?? Math.min(availableParallelism(), MAX_WORK_THREADS),
    maxMemoryBytes,
    benchWeb: flag(p, 'bench-web'), force: flag(p, 'force'), externalData: flag(p, 'external-data'), weights: str(p, 'weights') as OptimizeSettings['weights'],
    onProgress: (done, total, layer) => shown.layer(done, total, layer),
    onStage: (stage) => shown.stage(stage),
  };
}

/** A terminal gets a live line (not with --json); a log gets a line every 10 s of a long run. */
function progressOn(io: Io, json: boolean): Progress {
  return io.live && !json ? createProgress(io.live, true) : createProgress((t) => io.err(t.replace(/\n$/, '')), false);
}

/** The run's configuration, through the library's resolution of settings (one set of defaults). */
function configFrom(p: Parsed, command: Command, shown: Progress, maxMemoryBytes: number | undefined, onLoaded?: PipelineConfig['onLoaded']): PipelineConfig {
  const { shapes, values } = feedOverrides(strs(p, 'shape'), strs(p, 'input'), maxInputBytes(p));
  const settings = settingsFrom(p, shapes, values, shown, maxMemoryBytes);
  const seed = settings.seed ?? DEFAULT_SEED;
  return pipelineConfig(settings, command, { ...dataHooks(dataSettingsFrom(p), shapes, values, seed), onLoaded });
}

/**
 * The command line as a shell would take it back, for OUT's metadata, with the positional
 * IN and OUT written as IN and OUT: the same options on other files write the same bytes.
 */
function commandLineOf(command: string, argv: readonly string[], positionals: readonly string[]): string {
  const quote = (a: string): string => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  const names = ['IN', 'OUT'];
  const left = [...positionals];
  const args = argv.map((a) => {
    const i = left.indexOf(a);
    if (i < 0) return quote(a);
    left[i] = '\0';
    return names[i] ?? quote(a);
  });
  return ['onnx-lr', command, ...args].join(' ');
}

/**
 * Before any work: the folder of each file the run will write exists and can be written
 * (otherwise the whole run would end in that error). Whether the file itself may be
 * replaced is checked once IN is loaded (output-paths.ts).
 */
function checkWritableFolders(files: readonly { path: string; label: string }[]): void {
  for (const f of files) {
    const dir = path.dirname(path.resolve(f.path));
    let isDir = false;
    try { isDir = statSync(dir).isDirectory(); } catch { /* reported below */ }
    if (!isDir) throw new LrError('io', `cannot write ${f.label} ${f.path}: no such folder ${dir}`);
    try {
      accessSync(dir, constants.W_OK);
    } catch {
      throw new LrError('io', `cannot write ${f.label} ${f.path}: the folder ${dir} is not writable`);
    }
  }
}

/** `maxMemoryBytes`: the worker's memory limit (--max-memory, taken out of argv by main). */
export async function optimize(argv: readonly string[], io: Io, maxMemoryBytes?: number): Promise<number> {
  const p = parse(argv, { ...COMMON, ...OPTIMIZE_ONLY }, 'optimize');
  if (flag(p, 'help')) { io.out(OPTIMIZE_HELP); return 0; }
  const [inPath, outPath] = expectPositionals(p, 2, 'optimize', 'IN OUT');
  const reportPath = str(p, 'report');
  const htmlPath = str(p, 'html');
  const sideFiles = [
    ...(reportPath !== undefined ? [{ path: reportPath, label: '--report' }] : []),
    ...(htmlPath !== undefined ? [{ path: htmlPath, label: '--html' }] : []),
  ];
  checkWritableFolders([{ path: outPath, label: 'OUT' }, ...sideFiles]);
  const shown = progressOn(io, flag(p, 'json'));
  // Before the long run (and without reading IN twice): OUT and the report may not replace
  // IN, a file IN reads, or each other.
  const cfg = configFrom(p, 'optimize', shown, maxMemoryBytes, (loaded) => checkOutputs([
    { path: outPath, label: 'OUT', mayReplace: 'model' },
    ...sideFiles,
  ], modelInputs(loaded), { force: flag(p, 'force') }));
  const run: PipelineConfig & CommandLine = { ...cfg, commandLine: commandLineOf('optimize', argv, [inPath, outPath]) };
  if (cfg.verify.web) await requireWebBackend();
  const { report, pass } = await runOptimize(inPath, outPath, run);
  shown.end();
  // The factors were stored wider than --weights asked, for OUT to pass: said here too, not only in the report.
  if (report.weights?.fallback) io.err(`onnx-lr: note: --weights ${report.weights.requested ?? report.weights.mode}: ${report.weights.fallback}`);
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
  // The page reads IN again for the spectra (the run is over, so its memory is free), unless OUT replaced it (--force).
  if (htmlPath !== undefined) {
    const replaced = fileKey(inPath) === fileKey(outPath);
    const html = await renderHtmlReport(report, replaced ? { spectraNote: 'not computed: OUT replaced IN (--force), so the original weights are gone' } : { model: inPath });
    writeHtmlReport(htmlPath, html);
  }
  return pass ? 0 : 1;
}

export async function plan(argv: readonly string[], io: Io, maxMemoryBytes?: number): Promise<number> {
  const p = parse(argv, COMMON, 'plan');
  if (flag(p, 'help')) { io.out(PLAN_HELP); return 0; }
  const [inPath] = expectPositionals(p, 1, 'plan', 'IN');
  const shown = progressOn(io, false);
  const cfg = configFrom(p, 'plan', shown, maxMemoryBytes);
  const result = await runOptimize(inPath, undefined, cfg);
  shown.end();
  const planFile = planFileOf(inPath, result);
  // The plan goes to stdout as JSON; what the run noted goes to stderr, as optimize prints it.
  for (const n of result.report.notes) io.err(`note: ${n}`);
  io.out(JSON.stringify(planFile, null, 2));
  return 0;
}
