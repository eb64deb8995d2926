/**
 * The optimize job end to end: load, learn shapes, (calibrate, measure sensitivity,
 * allocate a budget), rewrite, write OUT atomically, verify in ORT, measure latency,
 * and assemble the report. The CLI only parses arguments and prints.
 */
import { Model } from '../graph/graph.js';
import { findLayers } from '../graph/layers.js';
import { summarize } from '../graph/summary.js';
import { AUTO_EXTERNAL_BYTES, forEachTensor, loadModel, saveModel, type LoadedModel } from '../onnx/file.js';
import { isExternal } from '../onnx/tensor.js';
import type { Report } from '../report/report.js';
import type { LayerInputStats } from '../rewrite/pass.js';
import { buildFeeds, type ShapeOverrides, type ValueOverrides } from '../verify/inputs.js';
import { measureLatency } from '../verify/latency.js';
import { createSession } from '../verify/session.js';
import type { Feeds, HostTensor } from '../verify/tensor.js';
import { preflightOriginal, verifyModels } from '../verify/verify.js';
import { LrError } from '../errors.js';
import { shapesFor } from '../graph/layer-shapes.js';
import type { Budget } from './budget.js';
import { allocate, budgetLabel, eligibleLayers, measureAll, planFromAllocation } from './budgeted.js';
import { optimizeModel, policyLabel, type OptimizeOptions } from './driver.js';
import { outputErr2, runAll, top1OverLastAxis, type Candidate, type LayerSensitivity } from './sensitivity.js';
import { nextErrorBudget, type ErrorAttempt } from './error-search.js';
import { carryOver, errorsAgainstOriginal, mergeStage, snapshotLayers, stageBudget } from './stages.js';
import { decodeModel, encodeModel } from '../onnx/codec.js';
import { createSyncOrtGemm } from '../linalg/ort-gemm-sync.js';

export interface CalibrationSource {
  /** Feeds for the model's inputs (batches). */
  feeds: Feeds[];
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
  /** Calibration inputs; random seeded inputs are made when a budget needs data and none is given. */
  calibration?: (inputs: import('../verify/session.js').ValueInfo[]) => Promise<CalibrationSource>;
  dataAware: boolean;
  /** Reach the budget in this many stages, merging and re-splitting factored layers (default 1). */
  stages?: number;
  /** Time candidate rewrites layer by layer and keep only those measured faster (always on for latency budgets). */
  layerLatency?: boolean;
  verify: { enabled: boolean; minCosine: number; atol?: number; rtol?: number; threads: number; latency: boolean; web: boolean };
  save: { force: boolean; externalData: boolean };
  onProgress?: OptimizeOptions['onProgress'];
  onStage?: (stage: string) => void;
}

export interface PipelineResult {
  report: Report;
  pass: boolean;
  /** Sensitivity measurements of a budgeted run (cached in plan files). */
  sensitivity?: LayerSensitivity[];
}

const RANDOM_CALIB_SAMPLES = 4;

async function defaultFeeds(loaded: LoadedModel, cfg: PipelineConfig): Promise<CalibrationSource> {
  const s = await createSession({ path: loaded.path }, { graphOptimizationLevel: 'disabled' });
  if (!s.ok) throw s.error;
  try {
    if (cfg.calibration) return await cfg.calibration([...s.value.inputs]);
    // Seeded, and a different seed from verification's, so verification stays held out.
    const plan = buildFeeds(s.value.inputs, { seed: cfg.opts.seed + 1000, count: RANDOM_CALIB_SAMPLES, shapes: cfg.shapes, values: cfg.values });
    if (!plan.ok) throw plan.error;
    return { feeds: plan.value.feeds, description: `${RANDOM_CALIB_SAMPLES} seeded random input sets (seed ${cfg.opts.seed + 1000})` };
  } finally {
    await s.value.release();
  }
}

/** With `outPath` undefined nothing is written or verified (the plan command). */
export async function runOptimize(inPath: string, outPath: string | undefined, cfg: PipelineConfig): Promise<PipelineResult> {
  const t0 = performance.now();
  const opts: OptimizeOptions = { ...cfg.opts };
  let loaded = loadModel(inPath);
  // The factorizations' large products run in ORT (a worker thread, since the passes are
  // synchronous); without it they run in JS, only slower.
  let gemmFailed: string | undefined;
  const gemm = await createSyncOrtGemm().catch((e: Error) => { gemmFailed = e.message; return undefined; });
  try {
    opts.external = loaded.external;
    opts.gemm = gemm;
    opts.onProgress = cfg.onProgress;
    let model = new Model(loaded.model);
    const notes: string[] = [];
    if (gemmFailed) notes.push(`factorizations ran in JS (slower): ${gemmFailed}`);
    cfg.onStage?.('learning shapes');
    const sh = await shapesFor(loaded, model, cfg.shapes, cfg.values);
    if (sh.note) notes.push(sh.note);
    if (sh.defaulted.length > 0) notes.push(`dynamic dims set to 1 (use --shape): ${sh.defaulted.map((d) => `${d.input}[${d.axis}]`).join(', ')}`);
    const before = summarize(loaded.model, findLayers(model, sh.shapes));
    const needData = cfg.budget !== undefined || (cfg.calibration !== undefined && cfg.dataAware);
    let calib: CalibrationSource | undefined;
    let reference: Record<string, HostTensor>[] | undefined;
    if (needData) {
      cfg.onStage?.('reading calibration inputs');
      calib = await defaultFeeds(loaded, cfg);
      const ref = await runAll({ path: loaded.path }, calib.feeds);
      if (!ref.ok) throw ref.error;
      reference = ref.value;
    }
    // Data-aware runs measure the input statistics of every layer that may be rewritten
    // (not the excluded or too small ones) on the model as it stands.
    const collectStats = calib?.collectStats && cfg.dataAware
      ? (stage: string) => {
        cfg.onStage?.(stage);
        const names = eligibleLayers(model, sh.shapes, opts.exclude, opts.minParams).map((l) => l.name);
        return calib!.collectStats!(loaded, names, (done, total) => cfg.onProgress?.(done, total, 'calibration run'));
      }
      : undefined;
    if (collectStats) {
      opts.stats = await collectStats('collecting layer input statistics');
      notes.push(`data-aware decomposition: input statistics for ${opts.stats.size} layer(s)`);
    }
    let budgetInfo: Report['budget'];
    let sensitivity: LayerSensitivity[] | undefined;
    if (cfg.budget) {
      const budget = cfg.budget;
      const stages = cfg.stages ?? 1;
      const unit = budget.kind === 'error' ? cfg.budgetUnit ?? 'params' : budget.kind;
      let total = unit === 'params' ? before.params : before.macs ?? findLayers(model, sh.shapes).reduce((a, l) => a + l.params, 0);
      if (unit === 'latency') {
        // Latency targets are fractions of the whole model's measured time.
        const lat = await measureLatency({ path: loaded.path }, { path: loaded.path }, { threads: cfg.verify.threads, shapes: cfg.shapes, values: cfg.values, minSeconds: 0.5 });
        if (!lat.ok) throw lat.error;
        total = lat.value.originalMs.p50;
      }
      const top1 = budget.kind === 'error' ? budget.top1 : undefined;
      const snapshot = stages > 1 ? snapshotLayers(model) : undefined;
      const stageLog: NonNullable<NonNullable<Report['budget']>['stages']> = [];
      // Per stage: the model it starts from (undefined: the file), its outputs, and its error against the original.
      let startBytes: Uint8Array | undefined;
      let stageRef = reference!;
      let baseErr2 = 0;
      let records: ReturnType<typeof optimizeModel> = [];
      let prev: { sens: LayerSensitivity[]; choices: ReadonlyMap<string, Candidate> } | undefined;
      const restart = (): void => {
        if (startBytes) {
          loaded = { ...loaded, model: decodeModel(startBytes) };
        } else {
          loaded.external.close();
          loaded = loadModel(inPath);
          opts.external = loaded.external;
        }
        model = new Model(loaded.model);
      };
      for (let stage = 1; stage <= stages; stage++) {
        const last = stage === stages;
        if (stage > 1) {
          cfg.onStage?.(`stage ${stage}/${stages}: merging factors`);
          const problems = mergeStage(model, records, snapshot!, loaded.external);
          if (problems.length) notes.push(`stage ${stage}: could not merge ${problems.join('; ')}`);
          startBytes = encodeModel(loaded.model);
          if (collectStats) opts.stats = await collectStats(`stage ${stage}/${stages}: collecting layer input statistics`);
          const out = await runAll({ bytes: startBytes }, calib!.feeds);
          if (!out.ok) throw out.error;
          stageRef = out.value;
          baseErr2 = outputErr2(reference!, stageRef);
        }
        cfg.onStage?.(stages > 1 ? `stage ${stage}/${stages}: measuring layer sensitivity` : 'measuring layer sensitivity');
        const sens = await measureAll(model, sh.shapes, {
          method: opts.method, align: opts.policy.align, exclude: opts.exclude, minParams: opts.minParams, seed: opts.seed,
          external: loaded.external, stats: opts.stats, sensitivity: stage === 1 ? opts.plan?.sensitivity : undefined, gemm,
          // Two input sets rank the layers well enough; the final check uses all of them.
          feeds: calib!.feeds.slice(0, 2), reference: stageRef.slice(0, 2),
          totals: { params: before.params, macs: before.macs },
          layerLatency: cfg.layerLatency || unit === 'latency' ? { threads: cfg.verify.threads, shapes: sh.shapes } : undefined,
          onProgress: cfg.onProgress,
        });
        if (stage === 1) sensitivity = sens;
        const initial = prev ? carryOver(sens, prev.sens, prev.choices) : undefined;
        const target = stageBudget(budget, stage, stages);
        // Errors are measured against the stage's starting model: what is left of the budget.
        const stageErr2 = target.kind === 'error' ? Math.max(target.err2 - baseErr2, 0) : Infinity;
        const search = last && budget.kind === 'error';
        const attempts: ErrorAttempt[] = [];
        let err2Budget = stageErr2;
        let prevChoices: string | undefined;
        let finalRedo = false;
        // An error budget is checked in ORT after the rewrite; errors do not add exactly, so
        // the allocation is redone with another budget until the measured error fits
        // (error-search.ts decides how).
        for (;;) {
          const b: Budget = target.kind === 'error' ? { kind: 'error', err2: err2Budget } : target;
          const alloc = allocate(sens, b, total, unit, initial, !last);
          opts.plan = planFromAllocation(inPath, budgetLabel(budget), sens, alloc);
          cfg.onStage?.('decomposing at the allocated ranks');
          records = optimizeModel(model, sh.shapes, opts);
          const got = await runAll({ bytes: encodeModel(loaded.model) }, calib!.feeds);
          const measured = got.ok ? outputErr2(reference!, got.value) : Infinity;
          const agreement = got.ok && top1 !== undefined ? top1OverLastAxis(reference!, got.value) : undefined;
          if (top1 !== undefined && got.ok && agreement === undefined) {
            throw new LrError('usage', '--max-error top1:P needs an output whose last axis holds class scores (last dim above 1)');
          }
          const met = budget.kind !== 'error' ? alloc.met : top1 !== undefined ? (agreement ?? 0) >= top1 : measured <= budget.err2;
          const choices = [...alloc.choices].map(([k, c]) => `${k}:${c.pass}:${c.ranks.join('x')}`).join('|');
          attempts.push({ err2: err2Budget, met, measuredErr2: Math.max(measured - baseErr2, 0), saturated: choices === prevChoices });
          prevChoices = choices;
          budgetInfo = {
            kind: budget.kind, target: top1 ?? (budget.kind === 'error' ? Math.sqrt(budget.err2) : budget.fraction),
            achieved: top1 !== undefined ? agreement ?? 0 : budget.kind === 'error' ? Math.sqrt(measured) : alloc.after / Math.max(alloc.before, 1),
            predictedError: Math.sqrt(baseErr2 + alloc.predictedErr2), measuredError: Math.sqrt(measured), met: alloc.met && met, why: alloc.why,
            attempts: attempts.length,
            unit: top1 !== undefined ? `top-1 agreement on calibration inputs, saving ${unit}`
              : budget.kind === 'error' ? `output rel. L2 on calibration inputs, saving ${unit}`
              : unit === 'latency' ? 'latency (per-layer ORT timings)' : unit,
          };
          const step = !search || finalRedo ? { done: true as const, best: attempts[attempts.length - 1] }
            : nextErrorBudget(top1 !== undefined ? 'top1' : 'err2', stageErr2, attempts);
          if ('next' in step) {
            err2Budget = step.next;
          } else if (step.best && step.best !== attempts[attempts.length - 1]) {
            // The search ended past the best budget that held: rebuild that one.
            err2Budget = step.best.err2;
            finalRedo = true;
          } else {
            if (search && !met) {
              budgetInfo.met = false;
              budgetInfo.why = top1 !== undefined
                ? `measured top-1 agreement ${(agreement ?? 0).toFixed(4)} below ${top1} after ${attempts.length} allocations`
                : `measured error ${Math.sqrt(measured).toPrecision(3)} above the budget after ${attempts.length} allocations`;
            }
            if (stages > 1) {
              stageLog.push({
                stage, target: target.kind === 'error' ? Math.sqrt(target.err2) : target.fraction,
                [unit]: alloc.after / Math.max(alloc.before, 1), measuredError: Math.sqrt(measured),
                ...(agreement !== undefined && { top1: agreement }),
                layers: alloc.choices.size,
              });
              budgetInfo.stages = stageLog;
            }
            prev = { sens, choices: alloc.choices };
            break;
          }
          restart();
        }
      }
      if (stages > 1) {
        const orig = loadModel(inPath);
        try {
          errorsAgainstOriginal(model, records, snapshot!, new Model(orig.model), loaded.external, orig.external);
        } finally {
          orig.external.close();
        }
      }
      return await finish(records);
    }
    cfg.onStage?.('decomposing layers');
    return await finish(optimizeModel(model, sh.shapes, opts));

    async function finish(layers: ReturnType<typeof optimizeModel>): Promise<PipelineResult> {
      const report: Report = {
        tool: 'onnx-lr 0.1.0', seed: opts.seed, policy: cfg.budget ? budgetLabel(cfg.budget) : policyLabel(opts),
        input: { file: inPath, bytes: loaded.byteSize, ...before },
        output: { file: outPath ?? '', bytes: 0, ...summarize(loaded.model) },
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
      const verifyOpts = {
        seed: opts.seed, shapes: cfg.shapes, inputs: cfg.values, minCosine: cfg.verify.minCosine, threads: cfg.verify.threads,
        // Without --atol/--rtol only the cosine decides: a lossy rewrite never meets 1e-5.
        atol: cfg.verify.atol ?? Infinity, rtol: cfg.verify.rtol ?? 0,
      };
      // Nothing is written that ORT cannot check: a model that is written inline is verified
      // from memory before it is written (which also proves ORT loads it); one with external
      // data needs its files, so only the original's first run is checked before writing.
      const unverifiable = (e: LrError): LrError => new LrError(e.kind, `cannot verify: ${e.message}; nothing written (--no-verify writes OUT unchecked)`);
      let verified: Awaited<ReturnType<typeof verifyModels>> | undefined;
      if (cfg.verify.enabled) {
        cfg.onStage?.('verifying in ONNX Runtime');
        const inline = !cfg.save.externalData && !hasExternalTensors(loaded.model) ? encodeModel(loaded.model) : undefined;
        if (inline && inline.length <= AUTO_EXTERNAL_BYTES) {
          verified = await verifyModels({ path: loaded.path }, { bytes: inline }, verifyOpts);
          if (!verified.ok) throw unverifiable(verified.error);
        } else {
          const pre = await preflightOriginal({ path: loaded.path }, verifyOpts);
          if (!pre.ok) throw unverifiable(pre.error);
        }
      }
      cfg.onStage?.('writing');
      const saved = saveModel({ model: loaded.model, external: loaded.external, path: loaded.path }, outPath, {
        force: cfg.save.force, ...(cfg.save.externalData ? { externalData: true } : {}),
      });
      report.output.bytes = saved.bytes + (saved.externalBytes ?? 0);
      let pass = true;
      if (cfg.verify.enabled) {
        const v = cfg.verify;
        if (!verified) {
          cfg.onStage?.('verifying in ONNX Runtime');
          verified = await verifyModels({ path: loaded.path }, { path: saved.path }, verifyOpts);
        }
        const res = verified;
        if (!res.ok) throw res.error;
        report.verify = { ...res.value, minCosine: v.minCosine, atol: v.atol, rtol: v.rtol };
        report.inputs = Object.keys(cfg.values).length > 0 ? `--input ${Object.keys(cfg.values).join(', ')} + seeded random for the rest` : 'seeded random inputs';
        pass = res.value.pass;
        if (v.latency) {
          cfg.onStage?.('measuring latency');
          const lat = await measureLatency({ path: loaded.path }, { path: saved.path }, { threads: v.threads, shapes: cfg.shapes, values: cfg.values });
          if (lat.ok) report.latency = lat.value; else notes.push(`latency not measured: ${lat.error.message}`);
          if (v.web) {
            const web = await measureLatency({ path: loaded.path }, { path: saved.path }, { backend: 'web', shapes: cfg.shapes, values: cfg.values });
            if (web.ok) report.latencyWeb = web.value; else notes.push(`web latency not measured: ${web.error.message}`);
          }
          if (cfg.budget?.kind === 'latency' && report.latency && budgetInfo) {
            const ratio = report.latency.optimizedMs.p50 / report.latency.originalMs.p50;
            budgetInfo.achieved = ratio;
            budgetInfo.unit = 'measured latency (ORT-node p50)';
            budgetInfo.met = ratio <= cfg.budget.fraction * 1.02;
            if (!budgetInfo.met) budgetInfo.why = `measured latency ratio ${ratio.toFixed(3)} > target ${cfg.budget.fraction} (allocated by per-layer timings; ${budgetInfo.why ?? 'their sum met the target: layer times do not add up exactly'})`;
          }
        }
      }
      if (budgetInfo && !budgetInfo.met) notes.push(`budget not met: ${budgetInfo.why}`);
      report.seconds = (performance.now() - t0) / 1000;
      return { report, pass, sensitivity };
    }
  } finally {
    loaded.external.close();
    await gemm?.dispose();
  }
}

function hasExternalTensors(m: import('../onnx/schema.js').ModelProto): boolean {
  let found = false;
  forEachTensor(m, (t) => { if (isExternal(t)) found = true; });
  return found;
}
