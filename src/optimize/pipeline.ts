/**
 * The optimize job end to end: load, learn shapes, (calibrate, measure sensitivity,
 * allocate a budget), rewrite, write OUT atomically, verify in ORT, measure latency,
 * and assemble the report. The CLI only parses arguments and prints.
 */
import { Model } from '../graph/graph.js';
import { findLayers } from '../graph/layers.js';
import { summarize } from '../graph/summary.js';
import { loadModel, type LoadedModel } from '../onnx/file.js';
import type { Report } from '../report/report.js';
import type { LayerInputStats } from '../rewrite/pass.js';
import { buildFeeds, type ShapeOverrides, type ValueOverrides } from '../verify/inputs.js';
import { createSession } from '../verify/session.js';
import type { Feeds, HostTensor } from '../verify/tensor.js';
import type { ValueInfo } from '../verify/session.js';
import { shapesFor } from '../graph/layer-shapes.js';
import type { Budget } from './budget.js';
import { budgetLabel, eligibleLayers } from './budgeted.js';
import { runBudgeted, type Job } from './budget-run.js';
import { writeAndVerify } from './write-verify.js';
import { optimizeModel, policyLabel, type OptimizeOptions } from './driver.js';
import { pickOutputs, runAll, type LayerSensitivity } from './sensitivity.js';
import { LrError } from '../errors.js';
import { createSyncOrtGemm } from '../linalg/ort-gemm-sync.js';

export interface CalibrationSource {
  /** Feeds for the model's inputs (batches). */
  feeds: readonly Feeds[];
  /** Said in the report: what the calibration inputs were. */
  description: string;
  /** Per-layer input statistics, when data-aware decomposition is on. */
  collectStats?: (
    model: LoadedModel, layerNames: readonly string[], onProgress?: (done: number, total: number) => void,
  ) => Promise<ReadonlyMap<string, LayerInputStats>>;
}

export interface PipelineConfig {
  opts: OptimizeOptions;
  budget?: Budget;
  /** For error budgets: what to save. */
  budgetUnit?: 'params' | 'macs' | 'latency';
  shapes: ShapeOverrides;
  values: ValueOverrides;
  /** The outputs that matter (--outputs): budgets, sensitivity and verification judge only these. */
  outputs?: readonly string[];
  /** Calibration inputs; random seeded inputs are made when a budget needs data and none is given. */
  calibration?: (inputs: ValueInfo[]) => Promise<CalibrationSource>;
  dataAware: boolean;
  /** Reach the budget in this many stages, merging and re-splitting factored layers (default 1). */
  stages?: number;
  /** Time candidate rewrites layer by layer and keep only those measured faster (always on for latency budgets). */
  layerLatency?: boolean;
  verify: {
    enabled: boolean; minCosine: number; atol?: number; rtol?: number; threads: number; latency: boolean; web: boolean;
    /** Held-out inputs to compare on instead of seeded random ones (--verify-data). */
    data?: (inputs: ValueInfo[]) => VerificationData;
  };
  save: { force: boolean; externalData: boolean };
  onProgress?: OptimizeOptions['onProgress'];
  onStage?: (stage: string) => void;
}

export interface VerificationData { feeds: readonly Feeds[]; description: string }

export interface PipelineResult {
  report: Report;
  pass: boolean;
  /** Sensitivity measurements of a budgeted run (cached in plan files). */
  sensitivity?: LayerSensitivity[];
}

const RANDOM_CALIB_SAMPLES = 4;

/** The model's signature, from an ORT session. */
async function modelSignature(loaded: LoadedModel): Promise<{ inputs: ValueInfo[]; outputs: string[] }> {
  const s = await createSession({ path: loaded.path }, { graphOptimizationLevel: 'disabled' });
  if (!s.ok) throw s.error;
  const sig = { inputs: [...s.value.inputs], outputs: s.value.outputs.map((o) => o.name) };
  await s.value.release();
  return sig;
}

async function defaultFeeds(inputs: ValueInfo[], cfg: PipelineConfig): Promise<CalibrationSource> {
  if (cfg.calibration) return cfg.calibration(inputs);
  // Seeded, and a different seed from verification's, so verification stays held out.
  const plan = buildFeeds(inputs, { seed: cfg.opts.seed + 1000, count: RANDOM_CALIB_SAMPLES, shapes: cfg.shapes, values: cfg.values });
  if (!plan.ok) throw plan.error;
  return { feeds: plan.value.feeds, description: `${RANDOM_CALIB_SAMPLES} seeded random input sets (seed ${cfg.opts.seed + 1000})` };
}

/** With `outPath` undefined nothing is written or verified (the plan command). */
export async function runOptimize(inPath: string, outPath: string | undefined, cfg: PipelineConfig): Promise<PipelineResult> {
  const t0 = performance.now();
  const opts: OptimizeOptions = { ...cfg.opts };
  const loaded0 = loadModel(inPath);
  // A budgeted run may reload the model (job.loaded, job.model): read them from the job.
  const job: Job = { inPath, loaded: loaded0, model: new Model(loaded0.model), opts, notes: [] };
  const notes = job.notes;
  // The factorizations' large products run in ORT (a worker thread, since the passes are
  // synchronous); without it they run in JS, only slower.
  let gemmFailed: string | undefined;
  const gemm = await createSyncOrtGemm().catch((e: Error) => { gemmFailed = e.message; return undefined; });
  try {
    opts.external = job.loaded.external;
    opts.gemm = gemm;
    opts.onProgress = cfg.onProgress;
    if (gemmFailed) notes.push(`factorizations ran in JS (slower): ${gemmFailed}`);
    cfg.onStage?.('learning shapes');
    const sh = await shapesFor(job.loaded, job.model, cfg.shapes, cfg.values);
    if (sh.note) notes.push(sh.note);
    if (sh.defaulted.length > 0) notes.push(`dynamic dims set to 1 (use --shape): ${sh.defaulted.map((d) => `${d.input}[${d.axis}]`).join(', ')}`);
    const before = summarize(job.loaded.model, findLayers(job.model, sh.shapes));
    const needData = cfg.budget !== undefined || (cfg.calibration !== undefined && cfg.dataAware);
    const verifyData = outPath !== undefined && cfg.verify.enabled ? cfg.verify.data : undefined;
    const sig = needData || verifyData || cfg.outputs ? await modelSignature(job.loaded) : { inputs: [], outputs: [] };
    const inputs = sig.inputs;
    const unknown = cfg.outputs?.filter((o) => !sig.outputs.includes(o)) ?? [];
    if (unknown.length > 0) throw new LrError('usage', `--outputs: the model has no output ${unknown.join(', ')} (its outputs: ${sig.outputs.join(', ')})`);
    // Read before any work: bad verification data is reported now, not after the rewrite.
    const heldOut = verifyData?.(inputs);
    let calib: CalibrationSource | undefined;
    let reference: Record<string, HostTensor>[] | undefined;
    if (needData) {
      cfg.onStage?.('reading calibration inputs');
      calib = await defaultFeeds(inputs, cfg);
      const ref = await runAll({ path: job.loaded.path }, calib.feeds);
      if (!ref.ok) throw ref.error;
      // Errors are measured on what is compared with the reference: only the chosen outputs.
      reference = pickOutputs(ref.value, cfg.outputs);
    }
    // Data-aware runs measure the input statistics of every layer that may be rewritten
    // (not the excluded or too small ones) on the model as it stands.
    const collectStats = calib?.collectStats && cfg.dataAware
      ? (stage: string) => {
        cfg.onStage?.(stage);
        const names = eligibleLayers(job.model, sh.shapes, opts).map((l) => l.name);
        return calib!.collectStats!(job.loaded, names, (done, total) => cfg.onProgress?.(done, total, 'calibration run'));
      }
      : undefined;
    if (collectStats) {
      opts.stats = await collectStats('collecting layer input statistics');
      notes.push(`data-aware decomposition: input statistics for ${opts.stats.size} layer(s)`);
    }
    let budgetInfo: Report['budget'];
    let sensitivity: LayerSensitivity[] | undefined;
    let layers: ReturnType<typeof optimizeModel>;
    if (cfg.budget) {
      const r = await runBudgeted(job, cfg, { budget: cfg.budget, shapes: sh.shapes, before, calib: calib!, reference: reference!, collectStats, gemm });
      ({ records: layers, budgetInfo, sensitivity } = r);
    } else {
      cfg.onStage?.('decomposing layers');
      layers = optimizeModel(job.model, sh.shapes, opts);
    }
    const report: Report = {
      tool: 'onnx-lr 0.1.0', seed: opts.seed, policy: cfg.budget ? budgetLabel(cfg.budget) : policyLabel(opts),
      input: { file: inPath, bytes: job.loaded.byteSize, ...before },
      output: { file: outPath ?? '', bytes: 0, ...summarize(job.loaded.model) },
      layers, seconds: 0, notes, calibration: calib?.description, budget: budgetInfo, ...(sensitivity && { sensitivity }),
    };
    if (gemm?.fallbacks) notes.push(`${gemm.fallbacks} product(s) ran in JS after ORT's GEMM failed or did not answer (same result, slower)`);
    if (before.macs !== undefined) report.output.macs = layers.reduce((a, l) => a + (l.macsAfter ?? 0), 0);
    const nonFinite = layers.filter((l) => l.skipped && /NaN|non-finite|infinite/i.test(l.reason ?? ''));
    if (nonFinite.length > 0) notes.push(`warning: ${nonFinite.length} layer(s) skipped for NaN/Inf in their weights: ${nonFinite.map((l) => l.name).join(', ')}`);
    if (outPath === undefined) {
      report.seconds = (performance.now() - t0) / 1000;
      return { report, pass: true, sensitivity };
    }
    const pass = await writeAndVerify(job, cfg, outPath, report, heldOut);
    if (budgetInfo && !budgetInfo.met) notes.push(`budget not met: ${budgetInfo.why}`);
    report.seconds = (performance.now() - t0) / 1000;
    return { report, pass, sensitivity };
  } finally {
    job.loaded.external.close();
    await gemm?.dispose();
  }
}
