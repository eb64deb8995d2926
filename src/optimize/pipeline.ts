/**
 * The optimize job end to end: load, learn shapes, (calibrate, measure sensitivity,
 * allocate a budget), rewrite, write OUT atomically, verify in ORT, measure latency,
 * and assemble the report. The CLI only parses arguments and prints.
 */
import { statSync } from 'node:fs';
import { Model } from '../graph/graph.js';
import { findLayers } from '../graph/layers.js';
import { summarize } from '../graph/summary.js';
import { loadModel, type LoadedModel } from '../onnx/file.js';
import type { Report } from '../report/report.js';
import { buildFeeds } from '../verify/inputs.js';
import { createSession } from '../verify/session.js';
import type { HostTensor } from '../verify/tensor.js';
import type { ValueInfo } from '../verify/session.js';
import { shapesFor } from '../graph/layer-shapes.js';
import { budgetLabel, eligibleLayers } from './budgeted.js';
import { runBudgeted, settleLatencyBudget } from './budget-run.js';
import type { CalibrationSource, Job, PipelineConfig, PipelineResult, VerificationData } from './job.js';
import { writeAndVerify } from './write-verify.js';
import { optimizeModel, policyLabel, type RunContext } from './driver.js';
import { pickOutputs, runAll, type LayerSensitivity } from './sensitivity.js';
import { LrError } from '../errors.js';
import { createSyncOrtGemm } from '../linalg/ort-gemm-sync.js';
import { createOrtGemmEngine } from '../linalg/ort-gemm.js';
import type { GemmEngine } from '../linalg/engine.js';
import { optimizeAnchored, type AnchorInputs } from './anchored.js';
import { checkPlanModel } from './plan.js';
import { timed } from './timings.js';
import { roomOf } from '../graph/room.js';
import { profileModel } from '../verify/profile.js';

export type { CalibrationSource, PipelineConfig, PipelineResult, VerificationData };

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
  // Frozen: what the user asked for is never written to; runtime handles travel in `run`.
  const opts = Object.freeze({ ...cfg.opts });
  const loaded0 = loadModel(inPath);
  try { cfg.onLoaded?.(loaded0); } catch (e) { loaded0.external.close(); throw e; }
  // A budgeted run may reload the model (job.loaded, job.model): read them from the job.
  const job: Job = { inPath, loaded: loaded0, model: new Model(loaded0.model), opts, notes: [], timings: {} };
  const notes = job.notes;
  // A plan is checked against the model before any work: made for another model (refused
  // unless --force), layers the model lacks (noted).
  if (opts.plan) notes.push(...checkPlanModel(opts.plan, job.model, { force: cfg.save.force }));
  // The factorizations' large products run in ORT (a worker thread, since the passes are
  // synchronous); without it they run in JS, only slower.
  let gemmFailed: string | undefined;
  const gemm = await createSyncOrtGemm().catch((e: Error) => { gemmFailed = e.message; return undefined; });
  let statsEngine: GemmEngine | undefined;
  try {
    let stats = opts.stats;
    if (gemmFailed) notes.push(`factorizations ran in JS (slower): ${gemmFailed}`);
    cfg.onStage?.('learning shapes');
    const sh = await timed(job.timings, 'shapes', () => shapesFor(job.loaded, job.model, cfg.shapes, cfg.values));
    if (sh.note) notes.push(sh.note);
    if (sh.defaulted.length > 0) notes.push(`dynamic dims set to 1 (use --shape): ${sh.defaulted.map((d) => `${d.input}[${d.axis}]`).join(', ')}`);
    const layers0 = findLayers(job.model, sh.shapes);
    const before = summarize(job.loaded.model, layers0);
    // How much room the model has, from a profiled run of the original (runs that time anyway).
    let room: Report['room'];
    if (outPath !== undefined && cfg.verify.enabled && cfg.verify.latency) {
      const t = await timed(job.timings, 'profile', () => profileModel(job.loaded.path, { shapes: cfg.shapes, values: cfg.values, threads: cfg.verify.threads }));
      if (t.ok) room = roomOf(layers0, t.value);
      else notes.push(`room not measured: ${t.error.message}`);
    }
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
        return timed(job.timings, 'statistics', () => calib!.collectStats!(job.loaded, names, (done, total) => cfg.onProgress?.(done, total, 'calibration run')));
      }
      : undefined;
    if (collectStats) {
      stats = await collectStats('collecting layer input statistics');
      notes.push(`data-aware decomposition: input statistics for ${stats.size} layer(s)`);
    }
    // Anchored fitting needs the paired statistics of both models on the calibration feeds.
    let anchor: AnchorInputs | undefined;
    if (collectStats && cfg.anchor !== false) {
      statsEngine = createOrtGemmEngine();
      anchor = { feeds: calib!.feeds, external: job.loaded.external, engine: statsEngine, onStage: cfg.onStage, onProgress: cfg.onProgress };
    }
    let budgetInfo: Report['budget'];
    let sensitivity: LayerSensitivity[] | undefined;
    let layers: ReturnType<typeof optimizeModel>;
    if (cfg.budget) {
      const r = await runBudgeted(job, cfg, { budget: cfg.budget, shapes: sh.shapes, before, calib: calib!, reference: reference!, collectStats, anchor,
        run: { external: job.loaded.external, gemm, stats, onProgress: cfg.onProgress },
      });
      ({ records: layers, budgetInfo, sensitivity } = r);
    } else {
      const run: RunContext = { external: job.loaded.external, gemm, stats, onProgress: cfg.onProgress };
      cfg.onStage?.('decomposing layers');
      if (anchor) {
        // External payloads may have been re-read since (job.loaded): take the current reader.
        const r = await timed(job.timings, 'factorization', () => optimizeAnchored(job.model, sh.shapes, opts, { ...anchor!, external: job.loaded.external }, opts.plan, run));
        layers = r.records;
        notes.push(...r.notes);
      } else {
        layers = await timed(job.timings, 'factorization', () => optimizeModel(job.model, sh.shapes, opts, opts.plan, run));
      }
    }
    const report: Report = {
      tool: 'onnx-lr 0.1.0', seed: opts.seed, policy: cfg.budget ? budgetLabel(cfg.budget) : policyLabel(opts),
      // Like OUT's (protobuf plus data file), IN's size counts the data files it reads.
      input: { file: inPath, bytes: job.loaded.byteSize + job.loaded.dataFiles.reduce((n, f) => n + statSync(f).size, 0), ...before },
      output: { file: outPath ?? '', bytes: 0, ...summarize(job.loaded.model) },
      layers, seconds: 0, timings: job.timings, ...(room && { room }), notes, calibration: calib?.description, budget: budgetInfo, ...(sensitivity && { sensitivity }),
    };
    if (gemm?.fallbacks) notes.push(`${gemm.fallbacks} product(s) ran in JS after ORT's GEMM failed or did not answer (same result, slower)`);
    if (before.macs !== undefined) report.output.macs = layers.reduce((a, l) => a + (l.macsAfter ?? 0), 0);
    const nonFinite = layers.filter((l) => l.skipped && /NaN|non-finite|infinite/i.test(l.reason ?? ''));
    if (nonFinite.length > 0) notes.push(`warning: ${nonFinite.length} layer(s) skipped for NaN/Inf in their weights: ${nonFinite.map((l) => l.name).join(', ')}`);
    if (outPath === undefined) {
      report.seconds = (performance.now() - t0) / 1000;
      return { report, pass: true, sensitivity };
    }
    // Factorization is over: free the GEMM workers' ORT instances before two models are loaded.
    await gemm?.dispose();
    await statsEngine?.dispose();
    const pass = await writeAndVerify(job, cfg, outPath, report, heldOut);
    if (cfg.budget && budgetInfo && report.latency) settleLatencyBudget(budgetInfo, cfg.budget, report.latency);
    if (budgetInfo && !budgetInfo.met) notes.push(`budget not met: ${budgetInfo.why}`);
    report.seconds = (performance.now() - t0) / 1000;
    return { report, pass, sensitivity };
  } finally {
    job.loaded.external.close();
    await gemm?.dispose();
    await statsEngine?.dispose();
  }
}
