/**
 * optimize() and plan(): the command line's `optimize` and `plan` as calls, through the
 * same settings resolution (config.ts) and pipeline, returning the Report the command
 * prints (renderReport turns it into the same table).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LrError } from '../errors.js';
import { modelInputs } from '../onnx/file.js';
import { runOptimize } from '../optimize/pipeline.js';
import type { PlanFile } from '../optimize/plan.js';
import type { Report } from '../report/report.js';
import { checkOutputs } from '../util/output-paths.js';
import { pipelineConfig, type Command } from './config.js';
import { dataHooks } from './data.js';
import { DEFAULT_SEED } from './defaults.js';
import { describeInput, inTempDir, withModelPath, type ModelInput } from './model-input.js';
import { planFileOf } from './plan.js';
import type { OptimizeSettings } from './settings.js';
import { requireWebBackend } from './web-backend.js';

export interface OptimizeOptions extends OptimizeSettings {
  /** Where to write the optimized model (atomically); without it the result carries its bytes. */
  output?: string;
}

export interface OptimizeResult {
  /** What `onnx-lr optimize` prints (renderReport) or writes with --report. */
  report: Report;
  /** The verification's verdict (the command exits 1 when false); true when not verified. */
  pass: boolean;
  /** The optimized model, when no `output` path was given. */
  model?: Uint8Array;
}

function configOf(s: OptimizeSettings, command: Command, output?: string) {
  const hooks = dataHooks(s, s.shapes ?? {}, s.values ?? {}, s.seed ?? DEFAULT_SEED);
  // Before the long run: the output may not replace the input or a file it reads.
  const onLoaded = output === undefined ? undefined
    : (loaded: Parameters<typeof modelInputs>[0]) => checkOutputs([{ path: output, label: 'output', mayReplace: 'model' }], modelInputs(loaded), { force: s.force === true });
  return pipelineConfig(s, command, { ...hooks, onLoaded });
}

/** Decomposes the model's layers, writes the result and verifies it in ONNX Runtime. */
export async function optimize(input: ModelInput, options: OptimizeOptions = {}): Promise<OptimizeResult> {
  const { output, ...settings } = options;
  if (output === undefined && settings.externalData) throw new LrError('usage', '--external-data needs an output path (the data file is written beside it)');
  const cfg = configOf(settings, 'optimize', output);
  if (cfg.verify.web) await requireWebBackend();
  return withModelPath(input, async (inPath) => {
    const named = (r: Report): Report => (typeof input === 'string' ? r : { ...r, input: { ...r.input, file: describeInput(input) } });
    if (output !== undefined) {
      const { report, pass } = await runOptimize(inPath, output, cfg);
      return { report: named(report), pass };
    }
    return inTempDir(async (dir) => {
      const out = path.join(dir, 'optimized.onnx');
      const { report, pass } = await runOptimize(inPath, out, cfg);
      const model = new Uint8Array(fs.readFileSync(out));
      return { report: named({ ...report, output: { ...report.output, file: describeInput(model) } }), pass, model };
    });
  });
}

/** The per-layer decisions `optimize` would apply, without writing a model (`onnx-lr plan`). */
export async function plan(input: ModelInput, options: OptimizeSettings = {}): Promise<PlanFile> {
  const cfg = configOf(options, 'plan');
  return withModelPath(input, async (inPath) => planFileOf(describeInput(input), await runOptimize(inPath, undefined, cfg)));
}
