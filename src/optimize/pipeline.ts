/**
 * The optimize job end to end, as a line of stages that each return a value: load, learn
 * shapes (and profile the original), read the calibration and verification inputs, collect
 * statistics, rewrite (a budget allocates a plan and applies it; otherwise the user's plan
 * or policy is applied), write OUT atomically and verify it in ORT, then build the report
 * once from what the stages returned. The CLI only parses arguments and prints.
 */
import { statSync } from 'node:fs';
import { Model } from '../graph/graph.js';
import { findLayers } from '../graph/layers.js';
import { statisticsNotes } from '../calib/stats.js';
import type { Room } from '../graph/room.js';
import type { ShapeMap } from '../graph/shapes.js';
import { summarize, type ModelSummary } from '../graph/summary.js';
import { loadModel, modelInputs } from '../onnx/file.js';
import { buildReport } from '../report/build.js';
import { TOOL_NAME, TOOL_VERSION } from '../report/version.js';
import type { Report } from '../report/report.js';
import { buildFeeds } from '../verify/inputs.js';
import { createSession, type ModelSource, type ValueInfo } from '../verify/session.js';
import type { HostTensor } from '../verify/tensor.js';
import { shapesFor } from '../graph/layer-shapes.js';
import { budgetLabel, eligibleLayers } from './budgeted.js';
import { feedScale, isSvdPairLayer, measureOutputSensitivity } from './output-sensitivity.js';
import { runBudgeted, settleLatencyBudget } from './budget-run.js';
import type { CalibrationSource, CollectStats, Job, PipelineConfig, PipelineResult, VerificationData } from './job.js';
import { writeAndVerify } from './write-verify.js';
import { factorStorage, weightsNote } from '../rewrite/quantize-factors.js';
import { computesInFloat16, FLOAT16_NOTE } from '../rewrite/compute-float32.js';
import { createFitCache } from '../rewrite/fit-cache.js';
import { optimizeModel, policyLabel, type RunContext } from './driver.js';
import type { LayerSensitivity } from './sensitivity.js';
import { pickOutputs, runAll } from './output-error.js';
import { LrError } from '../errors.js';
import { createSyncOrtGemm } from '../linalg/ort-gemm-sync.js';
import { createOrtGemmEngine } from '../linalg/ort-gemm.js';
import type { GemmEngine } from '../linalg/engine.js';
import { optimizeAnchored, type AnchorInputs } from './anchored.js';
import { screenedPlan } from './latency-screen.js';
import { checkPlanModel, type LayerRecord } from './plan.js';
import { timed } from './timings.js';
import { roomOf } from '../graph/room.js';
import { profileModel } from '../verify/profile.js';
import { machineNchwcBlock } from '../verify/cpu-block.js';
import { insertLayoutBarriers } from '../rewrite/narrow-layout.js';
import { checkNarrowReorder } from './narrow-reorder.js';
import { float32Copy, type Float32Copy } from './float32-work.js';
import { refineFactors } from './refine.js';
import type { ModelSide } from '../report/report.js';

export type { CalibrationSource, PipelineConfig, PipelineResult, VerificationData };

const RANDOM_CALIB_SAMPLES = 4;

/** The model's signature, from an ORT session. */
async function modelSignature(source: ModelSource): Promise<{ inputs: ValueInfo[]; outputs: string[] }> {
  const s = await createSession(source, { graphOptimizationLevel: 'disabled' });
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

interface Learned { shapes: ShapeMap; before: ModelSummary; room?: Room; notes: string[] }

/** Shapes, IN's summary, and how much room it has (from a profiled run of the original, when latency is measured anyway). */
async function learnModel(job: Job, cfg: PipelineConfig, profile: boolean): Promise<Learned> {
  const notes: string[] = [];
  cfg.onStage?.('learning shapes');
  const sh = await timed(job.timings, 'shapes', () => shapesFor(job.loaded, job.model, cfg.shapes, cfg.values));
  if (sh.note) notes.push(sh.note);
  if (sh.defaulted.length > 0) notes.push(`dynamic dims set to 1 (use --shape): ${sh.defaulted.map((d) => `${d.input}[${d.axis}]`).join(', ')}`);
  const layers = findLayers(job.model, sh.shapes);
  const before = summarize(job.loaded.model, layers);
  let room: Room | undefined;
  if (profile) {
    const t = await timed(job.timings, 'profile', () => profileModel(job.loaded.path, { shapes: cfg.shapes, values: cfg.values, threads: cfg.verify.threads }));
    if (t.ok) room = roomOf(layers, t.value);
    else notes.push(`room not measured: ${t.error.message}`);
  }
  return { shapes: sh.shapes, before, room, notes };
}

export interface RunData {
  /** Held-out verification inputs (--verify-data). */
  heldOut?: VerificationData;
  calib?: CalibrationSource;
  /** The original's chosen outputs on the calibration feeds. */
  reference?: Record<string, HostTensor>[];
}

/** The inputs the run needs, all read before any work: bad data is reported now, not after the rewrite. */
async function readData(source: ModelSource, cfg: PipelineConfig, verifying: boolean): Promise<RunData> {
  const needData = cfg.budget !== undefined || (cfg.calibration !== undefined && cfg.dataAware);
  const verifyData = verifying ? cfg.verify.data : undefined;
  const sig = needData || verifyData || cfg.outputs ? await modelSignature(source) : { inputs: [], outputs: [] };
  const unknown = cfg.outputs?.filter((o) => !sig.outputs.includes(o)) ?? [];
  if (unknown.length > 0) throw new LrError('usage', `--outputs: the model has no output ${unknown.join(', ')} (its outputs: ${sig.outputs.join(', ')})`);
  const heldOut = verifyData?.(sig.inputs);
  if (!needData) return { heldOut };
  cfg.onStage?.('reading calibration inputs');
  const calib = await defaultFeeds(sig.inputs, cfg);
  const ref = await runAll(source, calib.feeds, cfg.workThreads);
  // ORT's refusal (e.g. an index out of a Gather's range) is about the user's data: say which.
  if (!ref.ok) throw new LrError(ref.error.kind, `the model failed on the calibration inputs (${calib.description}): ${ref.error.message}`);
  // Errors are measured on what is compared with the reference: only the chosen outputs.
  return { heldOut, calib, reference: pickOutputs(ref.value, cfg.outputs) };
}

/**
 * Data-aware runs measure the input statistics of every layer that may be rewritten (not
 * the excluded or too small ones) on the model as it stands: a budget's later stages call
 * this again on the merged model.
 */
function statisticsOf(job: Job, cfg: PipelineConfig, shapes: ShapeMap, calib: CalibrationSource | undefined): CollectStats | undefined {
  const collect = calib?.collectStats;
  if (!collect || !cfg.dataAware) return undefined;
  return (stage, part) => {
    cfg.onStage?.(stage);
    const names = part?.layers ?? statisticsLayers(job, cfg, shapes);
    return timed(job.timings, 'statistics', () => collect(job.loaded, names, (done, total) => cfg.onProgress?.(done, total, 'calibration run'), shapes, cfg.workThreads, part?.feeds));
  };
}

/**
 * The layers a run may rewrite: those a plan applied as it stands rewrites (the filters
 * only explain the layers it leaves out, driver.ts, so a plan's small layers are fitted on
 * data too), else those the filters leave. A budget's plan is a cache of measurements:
 * the filters decide there.
 */
function statisticsLayers(job: Job, cfg: PipelineConfig, shapes: ShapeMap): string[] {
  const plan = cfg.budget ? undefined : job.opts.plan;
  if (!plan) return eligibleLayers(job.model, shapes, job.opts).map((l) => l.name);
  return plan.layers.filter((l) => !l.skipped).map((l) => l.name);
}

/** What the rewrite works from (prepareRewrite). */
export interface Prepared {
  data: RunData;
  collectStats?: CollectStats;
  anchor?: AnchorInputs;
  /** The runtime handles, with the statistics when data-aware. */
  run: RunContext;
  notes: string[];
  /** Anchored fitting's GEMM engine: the caller disposes of it once the rewrite is done. */
  statsEngine?: GemmEngine;
}

/**
 * The stage between learning shapes and rewriting, shared with the page's error budget
 * (browser/budget-page.ts): the run's data, then, data-aware, the layers' input statistics
 * and anchored fitting's inputs. `source` is IN as ORT opens it: its file (the CLI) or its
 * bytes (the page).
 */
export async function prepareRewrite(job: Job, cfg: PipelineConfig, shapes: ShapeMap, o: {
  source: ModelSource; verifying: boolean; run: Omit<RunContext, 'stats' | 'fits'>;
}): Promise<Prepared> {
  const notes: string[] = [];
  const data = await readData(o.source, cfg, o.verifying);
  const collectStats = statisticsOf(job, cfg, shapes, data.calib);
  const stats = await collectStats?.('collecting layer input statistics');
  if (stats) notes.push(`data-aware decomposition: input statistics for ${stats.size} layer(s)`, ...statisticsNotes(stats));
  // Anchored fitting needs the paired statistics of both models on the calibration feeds.
  let anchor: AnchorInputs | undefined;
  let statsEngine: GemmEngine | undefined;
  // With --no-anchor, --activation-fit still needs them: the original's patch samples for the refits (x̂ = x).
  if (collectStats && (cfg.anchor !== false || cfg.activationFit === true)) {
    statsEngine = createOrtGemmEngine();
    anchor = {
      feeds: data.calib!.feeds, external: job.loaded.external, engine: statsEngine, threads: cfg.workThreads, onStage: cfg.onStage, onProgress: cfg.onProgress,
      throughActivations: cfg.activationFit === true, independent: cfg.anchor === false,
    };
  }
  if (cfg.activationFit === true && !collectStats) notes.push('--activation-fit: no calibration statistics (it needs --calib, without --no-data-aware), so every fit is the linear one');
  let outputSensitivity: RunContext['outputSensitivity'];
  // Weights from gradients by default whenever there are statistics; --output-aware adds the
  // finite-difference probes for layers the gradients cannot reach.
  if (cfg.outputAware !== false && stats && data.calib) {
    cfg.onStage?.('measuring output sensitivities');
    const layers = findLayers(job.model, shapes).filter((l) => stats.has(l.name) && isSvdPairLayer(l));
    const m = await timed(job.timings, 'outputSensitivity', () => measureOutputSensitivity(job.model, shapes, layers, data.calib!.feeds, {
      outputs: cfg.outputs, threads: cfg.workThreads, seed: job.opts.seed, onProgress: cfg.onProgress, method: cfg.outputAware === true ? 'auto' : 'gradients',
    }));
    if (m.sensitivity.size > 0) outputSensitivity = m.sensitivity;
    notes.push(...m.notes);
  } else if (cfg.outputAware === true) notes.push('--output-aware: no calibration statistics (it needs --calib, without --no-data-aware), so no fit is weighted');
  const run: RunContext = { ...o.run, stats, ...(stats && { fits: createFitCache() }), ...(outputSensitivity && { outputSensitivity }) };
  return { data, collectStats, anchor, run, notes, statsEngine };
}

interface Rewritten {
  records: LayerRecord[];
  notes: string[];
  budget?: Report['budget'];
  sensitivity?: LayerSensitivity[];
}

interface RewriteInputs {
  learned: Learned;
  data: RunData;
  collectStats?: CollectStats;
  anchor?: AnchorInputs;
  run: RunContext;
}

/** A budget allocates a plan and applies it (budget-run.ts); otherwise the user's plan or policy is applied. */
async function rewrite(job: Job, cfg: PipelineConfig, inp: RewriteInputs): Promise<Rewritten> {
  const { shapes, before } = inp.learned;
  if (cfg.budget) {
    const r = await runBudgeted(job, cfg, {
      budget: cfg.budget, shapes, before, calib: inp.data.calib!, reference: inp.data.reference!, collectStats: inp.collectStats, anchor: inp.anchor, run: inp.run,
      heldOutFeeds: inp.data.heldOut?.feeds.length,
      heldOutSamples: inp.data.heldOut && Math.round(inp.data.heldOut.feeds.reduce((n, f) => n + feedScale(f, shapes), 0)),
    });
    return { records: r.records, notes: r.notes, budget: r.budgetInfo, sensitivity: r.sensitivity };
  }
  cfg.onStage?.('decomposing layers');
  let plan = job.opts.plan;
  const notes: string[] = [];
  if (cfg.latencyScreen && !plan) {
    // Only rewrites measured faster in ORT are kept; the survivors are applied as a plan.
    const s = await screenedPlan(job.model, shapes, job.opts, inp.run, { threads: cfg.verify.threads, onStage: cfg.onStage, onProgress: cfg.onProgress }, {
      decide: (fn) => timed(job.timings, 'factorization', fn), screen: (fn) => timed(job.timings, 'screen', fn),
    });
    plan = s.plan;
    notes.push(...s.notes);
    cfg.onStage?.('decomposing layers');
  }
  if (inp.anchor) {
    const r = await timed(job.timings, 'factorization', () => optimizeAnchored(job.model, shapes, job.opts, inp.anchor!, plan, inp.run));
    return { records: r.records, notes: [...notes, ...r.notes] };
  }
  const records = await timed(job.timings, 'factorization', () => optimizeModel(job.model, shapes, job.opts, plan, inp.run));
  return { records, notes };
}

/** --refine: the new factors moved toward the original's judged outputs on the calibration feeds; its notes. */
async function refineStage(job: Job, cfg: PipelineConfig, data: RunData, original: ReadonlySet<string>, shapes: ShapeMap): Promise<string[]> {
  if (!data.calib || !data.reference) return ['--refine: nothing refined: it needs calibration data (--calib, without --no-data-aware)'];
  cfg.onStage?.('refining the factors on the calibration inputs');
  const r = await timed(job.timings, 'refine', () => refineFactors(job.model, original, data.calib!.feeds, data.reference!, {
    steps: cfg.refine!, threads: cfg.workThreads, external: job.loaded.external, onProgress: cfg.onProgress, learned: shapes, memoryLimit: cfg.maxMemoryBytes,
  }));
  if (r.tensors === 0) return r.notes;
  const f = (x: number): string => x.toPrecision(3);
  const left = r.leftOut ? `, on the part left out ${f(r.leftOut.before)} → ${f(r.leftOut.after)}` : '';
  return [
    `--refine: ${r.tensors} factor tensor(s) of ${r.nodes} node(s) refitted to the original's outputs on ${r.fitted}: rel. L2 there ${f(r.before)} → ${f(r.after)}${left} (kept evaluation ${r.bestStep} of ${r.steps})`,
    ...r.notes,
    ...cfg.budget && r.bestStep > 0 ? ['--refine: the budget\'s measured and judged errors are those of the fit before the refit; the verification judges OUT as refitted'] : [],
  ];
}

/** With `outPath` undefined nothing is written or verified (the plan command). */
export async function runOptimize(inPath: string, outPath: string | undefined, cfg: PipelineConfig): Promise<PipelineResult> {
  const t0 = performance.now();
  // Frozen: what the user asked for is never written to; runtime handles travel in `run`.
  const opts = Object.freeze({ ...cfg.opts });
  const given = loadModel(inPath);
  let f32: Float32Copy | undefined;
  let job: Job | undefined;
  try {
    cfg.onLoaded?.(given);
    // IN as the user has it, for the report (a --compute float32 run works on a converted copy).
    const { macs: _, ...summary } = summarize(given.model);
    const inSide = { ...summary, bytes: given.byteSize + given.dataFiles.reduce((n, f) => n + statSync(f).size, 0) };
    // A plan is checked against IN as given before any work: made for another model (refused
    // unless --force), layers the model lacks (noted).
    const notes = [...cfg.defaults ?? [], ...opts.plan ? checkPlanModel(opts.plan, new Model(given.model), { force: cfg.save.force }) : []];
    let loaded = given;
    if (cfg.computeFloat32) {
      f32 = float32Copy(given);
      if (f32.path) { given.external.close(); loaded = loadModel(f32.path); }
    }
    // A budgeted run may reload the model (job.loaded, job.model): read them from the job.
    job = {
      inPath: f32?.path ?? inPath, loaded, model: new Model(loaded.model), opts, timings: {},
      ...(f32?.path && { original: { path: inPath, inputs: modelInputs(given) } }),
    };
    if (f32) notes.push(f32.note);
    else if (computesInFloat16(loaded.model)) notes.push(FLOAT16_NOTE);
    return await runJob(job, inPath, outPath, cfg, { t0, notes, inSide });
  } finally {
    job?.loaded.external.close();
    given.external.close();
    f32?.dispose();
  }
}

interface JobStart {
  t0: number;
  notes: string[];
  /** IN as given, for the report's input side. */
  inSide: Omit<ModelSide, 'file' | 'macs'>;
}

/** The stages after loading: learn, prepare, rewrite, write and verify, report. */
async function runJob(job: Job, inPath: string, outPath: string | undefined, cfg: PipelineConfig, start: JobStart): Promise<PipelineResult> {
  const { t0, notes, inSide } = start;
  const opts = job.opts;
  // The factorizations' large products run in ORT (a worker thread, since the passes are
  // synchronous); without it they run in JS, only slower.
  let gemmFailed: string | undefined;
  const gemm = await createSyncOrtGemm().catch((e: Error) => { gemmFailed = e.message; return undefined; });
  let statsEngine: GemmEngine | undefined;
  try {
    if (gemmFailed) notes.push(`factorizations ran in JS (slower): ${gemmFailed}`);
    const verifying = outPath !== undefined && cfg.verify.enabled;
    const learned = await learnModel(job, cfg, verifying && cfg.verify.latency);
    notes.push(...learned.notes);
    const prepared = await prepareRewrite(job, cfg, learned.shapes, {
      source: { path: job.loaded.path }, verifying, run: { external: job.loaded.external, gemm, onProgress: cfg.onProgress },
    });
    statsEngine = prepared.statsEngine;
    notes.push(...prepared.notes);
    // Measured on the model before any rewrite, once the run's data is known good (the
    // narrow convs are not low-rank layers, so OUT has the same sites); only when latency
    // is what the run saves: saving params or MACs, OUT never depends on a timing.
    const narrow = verifying && cfg.verify.latency && cfg.narrowReorder !== false && opts.saves === 'latency'
      ? await checkNarrowReorder({ path: job.loaded.path }, job.model, {
        block: machineNchwcBlock(), threads: cfg.verify.threads, shapes: cfg.shapes, values: cfg.values,
        phase: (fn) => { cfg.onStage?.('timing narrow conv outputs reordered out of the blocked layout'); return timed(job.timings, 'narrowReorder', fn); },
      })
      : undefined;
    const { data, collectStats, anchor, run } = prepared;
    // The original's weights by name (a budgeted run may reload the model): --refine moves only the new ones.
    const originalWeights = new Set(job.model.root.proto.initializer.map((t) => t.name ?? ''));
    const rewritten = await rewrite(job, cfg, { learned, data, collectStats, anchor, run });
    notes.push(...rewritten.notes);
    // The plan command writes no model: nothing to refine.
    if (cfg.refine && outPath !== undefined) notes.push(...await refineStage(job, cfg, data, originalWeights, learned.shapes));
    if (narrow?.report.kept) insertLayoutBarriers(job.model, narrow.sites);
    if (gemm?.fallbacks) notes.push(`${gemm.fallbacks} product(s) ran in JS after ORT's GEMM failed or did not answer (same result, slower)`);
    // --weights: the new factors stored as fp16 or int8; the verification then judges OUT as usual.
    const factors = outPath !== undefined && cfg.weights !== undefined && cfg.weights !== 'fp32'
      ? factorStorage(job.model, rewritten.records, cfg.weights, { shapes: learned.shapes, external: job.loaded.external }) : undefined;
    // Updated in place should OUT fail the verification and the factors be stored wider (write-verify.ts).
    const weights = factors?.weights;
    if (weights) notes.push(weightsNote(weights));
    const parts = {
      tool: `${TOOL_NAME} ${TOOL_VERSION}`, seed: opts.seed, policy: cfg.budget ? budgetLabel(cfg.budget) : policyLabel(opts),
      // Like OUT's (protobuf plus data file), IN's size counts the data files it reads.
      input: { file: inPath, ...learned.before, ...inSide },
      // Summarized before writing: writing releases the payloads.
      output: { file: outPath ?? '', summary: summarize(job.loaded.model) },
      layers: rewritten.records, timings: job.timings, room: learned.room, notes, calibration: data.calib?.description, sensitivity: rewritten.sensitivity,
      ...(weights && { weights }), ...(narrow && { narrowReorder: narrow.report }),
    };
    const seconds = (): number => (performance.now() - t0) / 1000;
    if (outPath === undefined) return { report: buildReport({ ...parts, budget: rewritten.budget, seconds: seconds() }), pass: true, sensitivity: rewritten.sensitivity };
    // Factorization is over: free the GEMM workers' ORT instances before two models are loaded.
    await gemm?.dispose();
    await statsEngine?.dispose();
    const written = await writeAndVerify(job, cfg, outPath, data.heldOut && { ...data.heldOut, learned: learned.shapes }, factors);
    // A latency budget is judged on OUT's measured latency; the others stand as allocated.
    const budget = cfg.budget && rewritten.budget && written.latency ? settleLatencyBudget(rewritten.budget, cfg.budget, written.latency) : rewritten.budget;
    return { report: buildReport({ ...parts, budget, written, seconds: seconds() }), pass: written.pass, sensitivity: rewritten.sensitivity };
  } finally {
    await gemm?.dispose();
    await statsEngine?.dispose();
  }
}
