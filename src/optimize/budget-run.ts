/**
 * A budgeted optimize run: measure sensitivity, allocate ranks to the budget, rewrite,
 * and check the result in ORT; for error budgets, redo the allocation until the measured
 * error fits (error-search.ts); for `--stages K`, merge the factors and go again.
 */
import { Model } from '../graph/graph.js';
import { findLayers } from '../graph/layers.js';
import type { ModelSummary } from '../graph/summary.js';
import type { ShapeMap } from '../graph/shapes.js';
import { decodeModel, encodeModel } from '../onnx/codec.js';
import { loadModel, type LoadedModel } from '../onnx/file.js';
import type { Report } from '../report/report.js';
import type { LayerInputStats } from '../rewrite/pass.js';
import { machineNchwcBlock } from '../verify/cpu-block.js';
import { measureLatency } from '../verify/latency.js';
import type { HostTensor } from '../verify/tensor.js';
import type { LatencyStats } from '../verify/latency.js';
import { LrError } from '../errors.js';
import { rankMultiple } from '../linalg/rank.js';
import type { Allocation, Budget } from './budget.js';
import { bridgeOrder, mixAllocations, nextBridgeStep, savingOf, type Bridge } from './bridge.js';
import { allocate, budgetLabel, eligibleLayers, measureAll, planFromAllocation } from './budgeted.js';
import { optimizeModel, type RunContext } from './driver.js';
import { nextErrorBudget, type ErrorAttempt, type NextBudget } from './error-search.js';
import type { Candidate, LayerSensitivity } from './sensitivity.js';
import { errBound, outputErr2, pickOutputs, runAll, spreadUnits, top1OverLastAxis } from './output-error.js';
import { errorsOn, leanFactor, leftOutSplit } from './left-out.js';
import { fitOnPart } from './part-fit.js';
import { carryOver, errorsAgainstOriginal, mergeStage, snapshotLayers, stageBudget } from './stages.js';
import type { CalibrationSource, CollectStats, Job, PipelineConfig } from './job.js';
import { optimizeAnchored, type AnchorInputs } from './anchored.js';
import { timed as timePhase } from './timings.js';

/** The model being rewritten. A budgeted run may reload it (another allocation, another stage). */
export type { Job };

/**
 * Rank multiple when a budget times candidates in ORT and no --align is given: the channel
 * block of ORT's blocked conv layout (NCHWc) on this CPU, 16 with AVX-512 and 8 on other
 * x86-64 CPUs (verify/cpu-block.ts). A conv runs in that layout only when its input
 * channels are a multiple of the block or below it; a chain rank off that grid falls back
 * to plain NCHW kernels with layout reorders around it. Undefined where ORT has no blocks.
 */
export const latencyAlign = (): number | undefined => machineNchwcBlock();

export interface BudgetInputs {
  budget: Budget;
  shapes: ShapeMap;
  before: ModelSummary;
  calib: CalibrationSource;
  /** The original model's outputs on the calibration feeds. */
  reference: Record<string, HostTensor>[];
  /** Fresh statistics on the model as it stands, when data-aware. */
  collectStats?: CollectStats;
  /** The runtime handles (the external reader is the job's, reread when the model is reloaded). */
  run: RunContext;
  /** Apply each allocation with anchored fitting (optimize/anchored.ts); sensitivity trials stay independent. */
  anchor?: AnchorInputs;
  /** How many held-out feeds OUT will be verified on (--verify-data), and the samples they hold: an error budget is judged for them (output-error.ts errBound). */
  heldOutFeeds?: number;
  heldOutSamples?: number;
}

type BudgetInfo = NonNullable<Report['budget']>;

export interface BudgetOutcome {
  records: ReturnType<typeof optimizeModel>;
  budgetInfo: BudgetInfo;
  /** The first stage's measurements (kept in the report, reusable as a plan). */
  sensitivity: LayerSensitivity[];
  /** For the report, in the order they were made. */
  notes: string[];
}

/**
 * A latency budget is judged again once the whole written model is timed: the allocation
 * summed per-layer timings, which do not add up exactly. The measured ratio becomes what
 * was achieved (2% slack for timing noise). Returns the settled budget (a new object);
 * other budgets are returned as they are.
 */
export function settleLatencyBudget(info: BudgetInfo, budget: Budget, measured: Pick<LatencyStats, 'originalMs' | 'optimizedMs'>): BudgetInfo {
  if (budget.kind !== 'latency') return info;
  const ratio = measured.optimizedMs.p50 / measured.originalMs.p50;
  const met = ratio <= budget.fraction * 1.02;
  return {
    ...info, achieved: ratio, unit: 'measured latency (ORT-node p50)', met,
    ...(!met && { why: `measured latency ratio ${ratio.toFixed(3)} > target ${budget.fraction} (allocated by per-layer timings; ${info.why ?? 'their sum met the target: layer times do not add up exactly'})` }),
  };
}

/**
 * Sensitivity trials run on the first two calibration feeds (two rank the layers well
 * enough; every allocation is then checked on all of them), and on the first one only for
 * models past SENSITIVITY_MACS per input: there each trial is a run of most of the model
 * (ISNet at 1024², 160 G: 41 layers' trials were over half of a 26-minute run).
 */
export const SENSITIVITY_MACS = 5e10;

export function sensitivityFeeds(macsPerInput: number | undefined): number {
  return macsPerInput !== undefined && macsPerInput > SENSITIVITY_MACS ? 1 : 2;
}

const widening = (lean: number): string => `the margin for unseen inputs widened ${Math.sqrt(lean).toPrecision(3)}× (rel. L2)`;

export async function runBudgeted(job: Job, cfg: PipelineConfig, inp: BudgetInputs): Promise<BudgetOutcome> {
  const { budget, shapes, before, calib, reference } = inp;
  // What an error budget's margin for unseen inputs is estimated over (output-error.ts errBound).
  const spread = spreadUnits(reference, shapes);
  const opts = job.opts;
  const stages = cfg.stages ?? 1;
  const unit = budget.kind === 'error' ? cfg.budgetUnit ?? 'params' : budget.kind;
  const timed = cfg.layerLatency || unit === 'latency';
  const align = opts.policy.align ?? (timed ? latencyAlign() : undefined);
  const notes: string[] = [];
  if (rankMultiple(align) && opts.policy.align === undefined) notes.push(`candidate ranks rounded up to multiples of ${align} (the channel block of ORT's blocked conv layout on this CPU); --align 1 turns this off`);
  if (opts.heaviest === undefined && opts.heaviestShare !== undefined) {
    const all = eligibleLayers(job.model, shapes, { ...opts, heaviestShare: undefined });
    const kept = eligibleLayers(job.model, shapes, opts).length;
    notes.push(`the budget considers the ${kept} of ${all.length} layers carrying ${+(opts.heaviestShare * 100).toFixed(1)}% of the ${all.every((l) => l.macs !== undefined) ? 'MACs' : 'params'} (the default with a budget; --heaviest N sets the number)`);
  }
  let total = unit === 'params' ? before.params : before.macs ?? findLayers(job.model, shapes).reduce((a, l) => a + l.params, 0);
  if (unit === 'latency' && (budget.kind !== 'error' || stages > 1)) {
    // Latency targets (and the stages' log) are fractions of the whole model's measured
    // time. An error budget saving latency needs no total: it is not timed (ISNet at
    // 1024²: 16 whole-model runs, minutes on a loaded machine).
    const lat = await timePhase(job.timings, 'sensitivity', () => measureLatency({ path: job.loaded.path }, { path: job.loaded.path }, {
      threads: cfg.verify.threads, shapes: cfg.shapes, values: cfg.values, minSeconds: 0.5, maxSeconds: 10, fewestRuns: 3, warmupSeconds: 1,
    }));
    if (!lat.ok) throw lat.error;
    total = lat.value.originalMs.p50;
  } else if (unit === 'latency') {
    total = NaN;
  }
  const top1 = budget.kind === 'error' ? budget.top1 : undefined;
  const sensFeeds = sensitivityFeeds(before.macs);
  const snapshot = stages > 1 ? snapshotLayers(job.model) : undefined;
  const stageLog: NonNullable<NonNullable<Report['budget']>['stages']> = [];
  // Per stage: the model it starts from (undefined: the file), its outputs, and its error against the original.
  let startBytes: Uint8Array | undefined;
  let stageRef = reference;
  let baseErr2 = 0;
  let records: ReturnType<typeof optimizeModel> = [];
  let budgetInfo: BudgetInfo | undefined;
  let sensitivity: LayerSensitivity[] | undefined;
  let prev: { sens: LayerSensitivity[]; choices: ReadonlyMap<string, Candidate> } | undefined;
  // The notes of the allocation kept (each allocation is applied anew).
  let anchorNotes: string[] = [];
  let stats = inp.run.stats;
  /** IN anew: the job's own reload (the page decodes its bytes), else its file. */
  const original = (): LoadedModel => job.reload?.() ?? loadModel(job.inPath);
  const restart = (): void => {
    if (startBytes) {
      job.loaded = { ...job.loaded, model: decodeModel(startBytes) };
    } else {
      job.loaded.external.close();
      job.loaded = original();
    }
    job.model = new Model(job.loaded.model);
  };
  for (let stage = 1; stage <= stages; stage++) {
    const last = stage === stages;
    if (stage > 1) {
      cfg.onStage?.(`stage ${stage}/${stages}: merging factors`);
      const problems = mergeStage(job.model, records, snapshot!, job.loaded.external);
      if (problems.length) notes.push(`stage ${stage}: could not merge ${problems.join('; ')}`);
      startBytes = encodeModel(job.loaded.model);
      if (inp.collectStats) stats = await inp.collectStats(`stage ${stage}/${stages}: collecting layer input statistics`);
      const out = await runAll({ bytes: startBytes }, calib.feeds, cfg.workThreads);
      if (!out.ok) throw out.error;
      stageRef = pickOutputs(out.value, cfg.outputs);
      baseErr2 = outputErr2(reference, stageRef);
    }
    cfg.onStage?.(stages > 1 ? `stage ${stage}/${stages}: measuring layer sensitivity` : 'measuring layer sensitivity');
    const sens = await timePhase(job.timings, 'sensitivity', () => measureAll(job.model, shapes, {
      method: opts.method, align, exclude: opts.exclude, minParams: opts.minParams, heaviest: opts.heaviest, heaviestShare: opts.heaviestShare, seed: opts.seed,
      external: job.loaded.external, stats, sensitivity: stage === 1 ? opts.plan?.sensitivity : undefined, gemm: inp.run.gemm, fits: inp.run.fits, outputSensitivity: inp.run.outputSensitivity,
      feeds: calib.feeds.slice(0, sensFeeds), reference: stageRef.slice(0, sensFeeds),
      totals: { params: before.params, macs: before.macs },
      layerLatency: timed ? { threads: cfg.verify.threads, shapes } : undefined,
      measureAllRungs: cfg.measureAllRungs, allMethods: cfg.allMethods, compareWork: opts.compareWork, threads: cfg.workThreads,
      onProgress: inp.run.onProgress,
    }));
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
    // Each attempt's allocation, to rebuild it or to bridge from it (bridge.ts).
    const allocOf = new Map<ErrorAttempt, Allocation>();
    /** An allocation to apply next instead of allocating to err2Budget. */
    let pending: Allocation | undefined;
    let bridge: (Bridge & { k: number; held: Allocation; failed: Allocation }) | undefined;
    // An error search allocates up to four or five times: each is fitted independently and
    // only the one kept is fitted anchored (a model's anchored waves cost a run each).
    const deferAnchor = inp.anchor !== undefined && search;
    // The part of the calibration data a fit may leave out, to see how it does on inputs it did not see (left-out.ts).
    const split = search ? leftOutSplit(calib.feeds, reference, shapes) : undefined;
    // Where the independent fits' own lean widens the margin for unseen inputs (not for top-1 budgets: no margin there).
    const leanSplit = split && top1 === undefined && stats && inp.collectStats ? split : undefined;
    /**
     * Squared-error factor of the independent fits' lean (leanFactor), measured on each
     * allocation (it grows with the ranks: rec, one seed, 1.42× to 1.78× in rel. L2 over five
     * allocations), or on the first only where a model's fits take minutes (past
     * SENSITIVITY_MACS per input, as ISNet: one more fit of its 40 layers per allocation).
     */
    let independentLean: number | undefined;
    const leanEach = before.macs === undefined || before.macs <= SENSITIVITY_MACS;
    // The part's statistics, per layer, collected once (the fits at ranks seen before come from the fit cache).
    const partStats = new Map<string, LayerInputStats>();
    const partAsked = new Set<string>();
    let leanNote: string | undefined;
    /** Applies `plan` to the model as it stands and measures it on the calibration feeds. */
    /** `anchored`: 'probe' the last wave only, 'through' the independent fits refitted through their activations. */
    /** `withStats`: an independent fit on these statistics instead of the run's. */
    const applyAndMeasure = async (plan: ReturnType<typeof planFromAllocation>, anchored: boolean | 'probe' | 'through', fitFeeds?: AnchorInputs['feeds'], withStats?: typeof stats) => {
      const run: RunContext = { ...inp.run, external: job.loaded.external, stats: withStats ?? stats };
      const through = anchored === 'through' || (anchored === true && inp.anchor!.independent === true);
      cfg.onStage?.(anchored === 'probe' ? 'probing the anchored fit on the last layers'
        : anchored && deferAnchor ? (through ? 'refitting the kept allocation through its activations' : 'fitting the kept allocation anchored')
        : 'decomposing at the allocated ranks');
      let recs: typeof records;
      let fitNotes: string[] = [];
      let waves = 0;
      let refitted = 0;
      if (anchored) {
        const anchor: AnchorInputs = {
          ...inp.anchor!, external: job.loaded.external, ...(fitFeeds && { feeds: fitFeeds, otherFeeds: true }), ...(anchored === 'probe' && { lastWaveOnly: true }), ...(through && { independent: true }),
        };
        const r = await timePhase(job.timings, 'factorization', () => optimizeAnchored(job.model, shapes, opts, anchor, plan, run));
        recs = r.records;
        fitNotes = r.notes;
        waves = r.waves;
        refitted = r.refitted;
      } else {
        recs = await timePhase(job.timings, 'factorization', () => optimizeModel(job.model, shapes, opts, plan, run));
      }
      const got = await timePhase(job.timings, 'allocation', () => runAll({ bytes: encodeModel(job.loaded.model) }, calib.feeds, cfg.workThreads));
      const err2 = got.ok ? outputErr2(reference, got.value) : Infinity;
      // An error budget is judged with a margin for unseen inputs (output-error.ts errBound).
      const bound = got.ok ? errBound(reference, got.value, { newFeeds: inp.heldOutFeeds, newSamples: inp.heldOutSamples, learned: shapes }) : Infinity;
      const top = got.ok && top1 !== undefined ? top1OverLastAxis(reference, got.value) : undefined;
      if (top1 !== undefined && got.ok && top === undefined) {
        throw new LrError('usage', '--max-error top1:P needs an output whose last axis holds class scores (last dim above 1)');
      }
      return { recs, fitNotes, err2, bound, top, waves, refitted, outs: got.ok ? pickOutputs(got.value, cfg.outputs) : undefined };
    };
    // An error budget is checked in ORT after the rewrite; errors do not add exactly, so
    // the allocation is redone with another budget until the measured error fits
    // (error-search.ts decides how).
    for (;;) {
      const b: Budget = target.kind === 'error' ? { kind: 'error', err2: err2Budget } : target;
      const alloc = pending ?? allocate(sens, b, total, unit, initial, !last);
      pending = undefined;
      // The allocation is applied as a plan, handed over as a value: opts.plan stays the user's.
      const plan = planFromAllocation(job.inPath, budgetLabel(budget), sens, alloc);
      // The independent fits' own lean (on this allocation, or the first: leanEach): fitted on
      // the part of the data the anchored fit sees (part-fit.ts), before the fit on all of it.
      let partOuts: ReturnType<typeof pickOutputs> | undefined;
      if (leanSplit && (independentLean === undefined || leanEach)) {
        let touched = false;
        partOuts = await fitOnPart(plan, leanSplit, {
          collect: async (layers, feeds) => {
            const missing = layers.filter((l) => !partAsked.has(l));
            if (missing.length > 0) {
              for (const l of missing) partAsked.add(l);
              const got = await inp.collectStats!(`measuring how the independent fits lean toward the calibration data (statistics of ${leanSplit.label})`, { layers: missing, feeds });
              for (const [l, st] of got) partStats.set(l, st);
            }
            return partStats;
          },
          apply: async (part) => {
            touched = true;
            return (await applyAndMeasure(plan, false, undefined, part)).outs;
          },
        });
        if (touched) restart();
        // Measured once: its statistics are not needed again (ISNet: 2.6 GB more at peak if kept).
        if (!leanEach) partStats.clear();
        // When it could not be measured (no layer, or the part's fit did not run): no widening.
        independentLean = 1;
        leanNote = undefined;
      }
      const applied = await applyAndMeasure(plan, inp.anchor !== undefined && !deferAnchor);
      const independentOuts = applied.outs;
      if (partOuts && leanSplit) {
        const part = errorsOn(leanSplit, reference, partOuts);
        const all = errorsOn(leanSplit, reference, independentOuts);
        independentLean = leanFactor(part, all);
        const which = leanEach ? 'the allocation' : 'the first allocation (each allocation\'s fits take minutes on this model: measured on the first only)';
        const rest = `${which} fitted on ${leanSplit.label} alone did rel. L2 ${Math.sqrt(part.leftOut).toPrecision(3)} on the rest (${Math.sqrt(all.leftOut).toPrecision(3)} fitted on all) and ${Math.sqrt(part.fitted).toPrecision(3)} on those it saw (${Math.sqrt(all.fitted).toPrecision(3)})`;
        leanNote = independentLean > 1
          ? `independent fits: ${widening(independentLean)}, for how much more a fit leans toward the ${leanSplit.unit} it saw: ${rest}`
          : `independent fits: no lean toward the ${leanSplit.unit} they saw, the margin for unseen inputs is not widened: ${rest}`;
      }
      records = applied.recs;
      anchorNotes = applied.fitNotes;
      let measured = applied.err2;
      let bound = applied.bound * (independentLean ?? 1);
      let agreement = applied.top;
      let met = budget.kind !== 'error' ? alloc.met : top1 !== undefined ? (agreement ?? 0) >= top1 : bound <= budget.err2;
      const choices = [...alloc.choices].map(([k, c]) => `${k}:${c.pass}:${c.ranks.join('x')}`).join('|');
      attempts.push({ err2: err2Budget, met, measuredErr2: Math.max((top1 === undefined ? bound : measured) - baseErr2, 0), saturated: choices === prevChoices });
      allocOf.set(attempts[attempts.length - 1]!, alloc);
      prevChoices = choices;
      budgetInfo = {
        kind: budget.kind, target: top1 ?? (budget.kind === 'error' ? Math.sqrt(budget.err2) : budget.fraction),
        achieved: top1 !== undefined ? agreement ?? 0 : budget.kind === 'error' ? Math.sqrt(measured) : alloc.after / Math.max(alloc.before, 1),
        predictedError: Math.sqrt(baseErr2 + alloc.predictedErr2), measuredError: Math.sqrt(measured), met: alloc.met && met, why: alloc.why,
        ...(budget.kind === 'error' && top1 === undefined && {
          unseenError: Math.sqrt(bound), feeds: calib.feeds.length, ...(spread.samples && { samples: spread.units }),
          ...(inp.heldOutFeeds && { heldOutFeeds: inp.heldOutFeeds, ...(spread.samples && inp.heldOutSamples && { heldOutSamples: inp.heldOutSamples }) }),
        }),
        attempts: attempts.length,
        unit: top1 !== undefined ? `top-1 agreement on calibration inputs, saving ${unit}`
          : budget.kind === 'error' ? `output rel. L2 on calibration inputs, saving ${unit}`
          : unit === 'latency' ? 'latency (per-layer ORT timings)' : unit,
      };
      const lastAttempt = attempts[attempts.length - 1]!;
      // The held attempt that saves most.
      const bestHeld = (): ErrorAttempt | undefined => attempts.filter((a) => a.met)
        .reduce<ErrorAttempt | undefined>((b, a) => (!b || savingOf(sens, allocOf.get(a)!, unit) > savingOf(sens, allocOf.get(b)!, unit) ? a : b), undefined);
      let step: NextBudget | { bridgeTo: number };
      if (!search || finalRedo) {
        step = { done: true, best: lastAttempt };
      } else if (bridge) {
        if (met) bridge.lo = bridge.k;
        else bridge.hi = bridge.k;
        const k = nextBridgeStep(bridge);
        step = k === undefined ? { done: true, best: bestHeld() } : { bridgeTo: k };
      } else {
        step = nextErrorBudget(top1 !== undefined ? 'top1' : 'err2', stageErr2, attempts);
        // The search is over: measure between the allocation kept and the smallest larger one that failed.
        const held = 'done' in step ? step.best : undefined;
        const failed = held && attempts.filter((a) => !a.met && a.err2 > held.err2).sort((a, b) => a.err2 - b.err2)[0];
        if (held && failed) {
          const names = bridgeOrder(sens, allocOf.get(held)!.choices, allocOf.get(failed)!.choices, unit);
          const br = { names, lo: 0, hi: names.length, steps: 0, k: 0, held: allocOf.get(held)!, failed: allocOf.get(failed)! };
          const k = nextBridgeStep(br);
          if (k !== undefined) {
            bridge = br;
            step = { bridgeTo: k };
          }
        }
      }
      if ('bridgeTo' in step) {
        bridge!.k = step.bridgeTo;
        bridge!.steps++;
        pending = mixAllocations(sens, bridge!.held, bridge!.failed, bridge!.names.slice(0, step.bridgeTo), unit);
      } else if ('next' in step) {
        err2Budget = step.next;
      } else if (step.best && step.best !== lastAttempt) {
        // The search ended past the best allocation that held: rebuild that one.
        pending = allocOf.get(step.best)!;
        err2Budget = step.best.err2;
        finalRedo = true;
      } else {
        // The search is over: the part's statistics go before the anchored fit's are collected.
        partStats.clear();
        if (bridge) {
          const kept = bridge.lo;
          notes.push(kept > 0
            ? `error search: between the allocation kept by the budget search and the next larger one (which missed the budget), ${kept} of ${bridge.names.length} layer(s) moved to the larger one's ranks (${bridge.steps} more allocation(s) measured)`
            : `error search: moving any of ${bridge.names.length} layer(s) toward the next larger allocation missed the budget (${bridge.steps} more allocation(s) measured)`);
        }
        if (deferAnchor) {
          // The kept allocation, fitted anchored. Its error on the feeds it was fitted on
          // flatters it (ISNet, three photos: 0.097 there, 0.144 on new ones, where the
          // independent fit went 0.107 → 0.122), so it is fitted without the last feed (or,
          // with one feed of several samples, its last quarter: left-out.ts) and kept only
          // when it does better there than the independent fit, which saw that part, and
          // meets the budget with its margin widened by how much more it leans toward what
          // it saw.
          const fitFeeds = split?.fitFeeds;
          type Outs = ReturnType<typeof pickOutputs> | undefined;
          const onSplit = (outs: Outs): { fitted: number; leftOut: number } => (split ? errorsOn(split, reference, outs) : { fitted: NaN, leftOut: NaN });
          const onCheck = (outs: Outs): number => onSplit(outs).leftOut;
          const iErrors = onSplit(independentOuts);
          const iCheck = iErrors.leftOut;
          /**
           * Fit `x` (fitted on the split's first part) with its margin for unseen inputs widened
           * by how much more it leans toward that part than the independent fit (left-out.ts),
           * with its error on the part left out (`check`).
           */
          const widened = <X extends { bound: number; outs: Outs }>(x: X | undefined): (X & { lean: number; check: number }) | undefined => {
            if (!x) return undefined;
            const errs = onSplit(x.outs);
            const lean = leanFactor(errs, iErrors);
            return { ...x, bound: x.bound * lean, lean, check: errs.leftOut };
          };
          restart();
          // A probe first: only the last wave anchored (one statistics pass, where the most
          // upstream error is there to compensate). When that does no better on the feed
          // left out, anchoring every wave is not paid for (ISNet: 8 of 21 minutes, and the
          // full anchored fit lost on the left-out photo in three runs of four).
          // (Without anchoring, only the fits through the activations differ: one pass, no probe.)
          const independent = inp.anchor!.independent === true;
          const what = independent ? 'the fit through the activations' : 'the anchored fit';
          const probe = split && met && !independent ? await applyAndMeasure(plan, 'probe', fitFeeds) : undefined;
          const probeCheck = probe ? onCheck(probe.outs) : NaN;
          const probeLost = probe !== undefined && !(probeCheck < iCheck);
          if (probe && !probeLost && probe.waves > 1) restart();
          const a = widened(probeLost ? undefined : probe && probe.waves <= 1 ? probe : await applyAndMeasure(plan, true, fitFeeds));
          /** Whether fit `x` meets the budget on the calibration inputs (with the margin for unseen ones). */
          const meets = (x: { top?: number; bound: number } | undefined): boolean => x !== undefined && (top1 !== undefined ? (x.top ?? 0) >= top1 : x.bound <= budget.err2);
          const aMet = meets(a);
          const aCheck = a?.check ?? NaN;
          /** Whether a fit with this error on the feed left out does better there than the independent fit. */
          const beats = (xCheck: number): boolean => !split || xCheck < iCheck;
          const wins = beats(aCheck);
          const info = budgetInfo;
          /** Makes fit `x` (the model as it stands) the run's result. */
          const adopt = (x: NonNullable<typeof a>, xMet: boolean, note: string | undefined): void => {
            ({ recs: records, err2: measured, bound, top: agreement } = x);
            const lean = x.lean > 1 && top1 === undefined
              ? [`${widening(x.lean)}: on the ${split!.unit} left out, this fit did that much worse against the independent fit than on those it was fitted on`]
              : [];
            anchorNotes = [...anchorNotes, ...x.fitNotes, ...(note ? [note] : []), ...lean];
            met = xMet;
            info.achieved = top1 !== undefined ? agreement ?? 0 : Math.sqrt(measured);
            info.measuredError = Math.sqrt(measured);
            if (info.unseenError !== undefined) info.unseenError = Math.sqrt(bound);
            info.met = alloc.met && met;
          };
          const leftOut = (label: string, xCheck: number): string | undefined => (!split ? undefined
            : `${label}: fitted on ${split.label}; on the rest, rel. L2 ${Math.sqrt(xCheck).toPrecision(3)} against ${Math.sqrt(iCheck).toPrecision(3)} for the independent fit`);
          /** Why fit `x` (named `what`) was not kept: it missed the budget, or did no better on the feed left out. */
          const notKept = (what: string, x: NonNullable<typeof a>, xCheck: number): string => (!meets(x)
            ? `${what} of the kept allocation missed the budget on the calibration inputs (rel. L2 ${Math.sqrt(x.err2).toPrecision(3)}, ${Math.sqrt(x.bound).toPrecision(3)} with the margin for unseen inputs${x.lean > 1 ? `; ${widening(x.lean)} for how much more it leans toward the ${split!.unit} it was fitted on than the independent fit` : ''}): every layer keeps its independent fit`
            : `${what} of the kept allocation, fitted on ${split!.label}, did no better on the rest (rel. L2 ${Math.sqrt(xCheck).toPrecision(3)}) than the independent fit (${Math.sqrt(iCheck).toPrecision(3)}): every layer keeps its independent fit`);
          anchorNotes = [];
          if (a && ((aMet && wins) || !met)) {
            adopt(a, aMet, leftOut(independent ? 'fits through the activation' : 'anchored fitting', aCheck));
          } else {
            // No conv refitted: the fit was the independent one, and its notes say why.
            const lost = independent && a?.refitted === 0 ? a.fitNotes : [probeLost
              ? `anchored fitting: only the last of ${probe!.waves} wave(s) fitted anchored (a probe, on ${split!.label}) did no better on the rest (rel. L2 ${Math.sqrt(probeCheck).toPrecision(3)}) than the independent fit (${Math.sqrt(iCheck).toPrecision(3)}): the other waves were not fitted anchored, every layer keeps its independent fit`
              : notKept(what, a!, aCheck)];
            // --activation-fit when anchoring lost: the independent fits, refitted through their activations.
            let t: typeof a;
            if (!independent && inp.anchor!.throughActivations === true && met) {
              restart();
              t = widened(await applyAndMeasure(plan, 'through', fitFeeds));
            }
            const tMet = meets(t);
            const tCheck = t?.check ?? NaN;
            if (t && t.refitted > 0 && tMet && beats(tCheck)) {
              anchorNotes = lost.map((x) => x.replace(/every layer keeps its independent fit$/, 'the independent fits were refitted through their activations instead'));
              adopt(t, tMet, leftOut('fits through the activation', tCheck));
            } else {
              restart();
              records = (await applyAndMeasure(plan, false)).recs;
              anchorNotes = [...lost, ...!t ? [] : t.refitted === 0 ? t.fitNotes : [notKept('the fit through the activations', t, tCheck)]];
            }
          }
        }
        if (search && !met) {
          budgetInfo.met = false;
          budgetInfo.why = top1 !== undefined
            ? `measured top-1 agreement ${(agreement ?? 0).toFixed(4)} below ${top1} after ${attempts.length} allocations`
            : `measured error ${Math.sqrt(bound).toPrecision(3)} (with the margin for unseen inputs; ${Math.sqrt(measured).toPrecision(3)} on the calibration inputs) above the budget after ${attempts.length} allocations`;
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
        if (leanNote) notes.push(leanNote);
        break;
      }
      restart();
    }
  }
  notes.push(...anchorNotes);
  if (stages > 1) {
    const orig = original();
    try {
      errorsAgainstOriginal(job.model, records, snapshot!, new Model(orig.model), job.loaded.external, orig.external);
    } finally {
      orig.external.close();
    }
  }
  return { records, budgetInfo: budgetInfo!, sensitivity: sensitivity!, notes };
}
