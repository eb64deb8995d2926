/**
 * `onnx-lr optimize` on bytes, for the page (web/): the same settings resolution
 * (api/config.ts), shape probe (graph/layer-shapes.ts), rewrite (optimize/driver.ts),
 * encoding and report (report/build.ts) as the command line, with ONNX Runtime Web in
 * place of onnxruntime-node (vite.web.config.ts points the library's ORT import at it).
 *
 * What differs from the CLI, on purpose:
 * - no files: the model comes in and goes out as bytes, so external data is refused;
 * - rewrites are kept when they lower params and MACs (the CLI's `--save params`): the
 *   CLI's default latency screen times every layer in ORT, which the page does not do in
 *   wasm; an error budget (`--max-error`) reads calibration images the page was given
 *   (browser/budget-page.ts) and saves params too;
 * - the factorizations' products of 2e7 flops and more run on the engine the page gives
 *   (ORT Web in a second worker, web/gemm-engine.ts) where the CLI runs them on ORT-node:
 *   same maths, rounding may differ in the last bits; the smaller ones run in JS on both;
 * - agreement and latency are measured in ORT Web (wasm; threads when the page is
 *   cross-origin isolated) and the latency is reported as latencyWeb.
 */
import { pipelineConfig } from '../api/config.js';
import type { OptimizeSettings } from '../api/settings.js';
import { LrError } from '../errors.js';
import type { SyncGemm } from '../linalg/engine.js';
import { Model } from '../graph/graph.js';
import { shapesFor } from '../graph/layer-shapes.js';
import { findLayers } from '../graph/layers.js';
import { summarize } from '../graph/summary.js';
import { encodeAs, encodeModel } from '../onnx/codec.js';
import type { ExternalReader } from '../onnx/external.js';
import { parseModel, type LoadedModel } from '../onnx/load.js';
import type { ModelProto } from '../onnx/schema.js';
import type { PipelineConfig } from '../optimize/pipeline.js';
import type { LayerRecord } from '../optimize/plan.js';
import { isExternal } from '../onnx/tensor.js';
import { forEachTensor } from '../onnx/walk.js';
import { budgetLabel } from '../optimize/budgeted.js';
import { optimizeModel, policyLabel } from '../optimize/driver.js';
import type { Job } from '../optimize/job.js';
import { timed, type Timings } from '../optimize/timings.js';
import { METADATA_KEYS, metadataOf, verdictOf } from '../optimize/write-verify.js';
import { buildReport, type Measured } from '../report/build.js';
import type { Report } from '../report/report.js';
import { TOOL_NAME, TOOL_VERSION } from '../report/version.js';
import { measureLatency } from '../verify/latency.js';
import { verifyModels } from '../verify/verify.js';
import { runPageBudget, type PageBudgetOutcome, type PageCalibration } from './budget-page.js';

/**
 * Largest model the page takes. The worker holds the input, its decoded form, the output
 * and the factorization workspaces; wasm ORT (32-bit: 4 GiB at most) holds both models at
 * once while timing them, each with its own packed copies, so a model that barely shrinks
 * needs about 4x its size there. Measured on a 23 GiB machine in Chromium 150: 768 MiB
 * (48 MatMuls 2048x2048) ran in 74 s with the machine's memory up 4.5 GB; the limit keeps
 * a margin for machines with less memory.
 */
export const MAX_PAGE_MODEL_BYTES = 512 * 2 ** 20;

/** What the page offers: the CLI's rewrite options and verification threshold, nothing that reads files. */
export type PageSettings = Pick<OptimizeSettings,
  'method' | 'energy' | 'rankRatio' | 'rank' | 'vbmf' | 'align' | 'exclude' | 'minParams' | 'heaviest' | 'seed' | 'shapes' | 'minCosine' | 'latency'
  | 'maxError' | 'dataAware' | 'anchor'>;

/** A synchronous GEMM for the factorizations, with what it did (web/gemm-engine.ts). */
export interface PageGemm extends SyncGemm {
  readonly products: number;
  readonly fallbacks: number;
}

export interface PageHooks {
  onStage?: (stage: string) => void;
  onProgress?: (done: number, total: number, layer: string) => void;
  /** Where the factorizations' large products run; default the JS kernel. */
  gemm?: PageGemm;
  /** Why there is no `gemm`, for the report's notes. */
  noGemm?: string;
  /** ORT Web's threads (src/browser/ort-web.ts): said with the latency figures. Default 1. */
  threads?: number;
  /** Calibration images and their options (`--calib DIR` and the image flags): needed by an error budget. */
  calibration?: PageCalibration;
}

export interface PageResult {
  /** The optimized model: as `onnx-lr optimize --save params` writes it, but for the run metadata. */
  bytes: Uint8Array;
  report: Report;
  /** The agreement verdict (cosine of every output at least minCosine). */
  pass: boolean;
}

/** Refuses a model the page cannot hold or whose weights live in other files. */
export function checkPageModel(size: number, fileName: string): void {
  if (size > MAX_PAGE_MODEL_BYTES) {
    const mib = (n: number): string => `${(n / 2 ** 20).toFixed(0)} MiB`;
    throw new LrError('unsupported', `${fileName} is ${mib(size)}, over the page's limit of ${mib(MAX_PAGE_MODEL_BYTES)} (use the command line, npx onnx-lr optimize, for larger ones)`);
  }
}

/** The page never reads files: a model that points at external data cannot be optimized here. */
const NO_EXTERNAL: ExternalReader = {
  readBytes(t) { throw new LrError('unsupported', `tensor ${t.name ?? ''} is in an external data file, which the page cannot read`); },
  close() {},
};

function refuseExternal(model: ModelProto, fileName: string): void {
  let n = 0;
  forEachTensor(model, (t) => { if (isExternal(t)) n++; });
  if (n > 0) throw new LrError('unsupported', `${fileName} keeps ${n} tensor(s) in external data files: the page takes single-file models (use the command line)`);
}

/** metadata_props as write-verify.ts writes them: the run's own keys replaced, the model's other entries kept. */
function withRunMetadata(model: ModelProto, cfg: PipelineConfig): ModelProto {
  const add: [string, string][] = Object.entries(metadataOf(cfg));
  const drop = new Set<string>([METADATA_KEYS.command, METADATA_KEYS.verdict, ...add.map(([k]) => k)]);
  return { ...model, metadataProps: [...(model.metadataProps ?? []).filter((e) => !drop.has(e.key ?? '')), ...add.map(([key, value]) => ({ key, value }))] };
}

/** A wasm timing bounded for a page: a few seconds, at least 5 runs each. */
const PAGE_TIMING = { minSeconds: 1, maxSeconds: 5, fewestRuns: 5 };

const clock = (): bigint => BigInt(Math.round(performance.now() * 1e6));

export async function optimizeBytes(input: Uint8Array, fileName: string, settings: PageSettings, hooks: PageHooks = {}): Promise<PageResult> {
  const t0 = performance.now();
  checkPageModel(input.length, fileName);
  // The CLI's resolution, with the CLI's `--save params`: the same options give the same rewrite.
  const cfg = pipelineConfig({ ...settings, save: 'params', onStage: hooks.onStage, onProgress: hooks.onProgress }, 'optimize');
  const opts = Object.freeze({ ...cfg.opts });
  const timings: Timings = {};
  hooks.onStage?.('reading the model');
  const proto = parseModel(input, fileName);
  refuseExternal(proto, fileName);
  // No file behind it: `path` only names the model, and an error budget restarts from the bytes.
  const loaded: LoadedModel = { model: proto, path: fileName, dir: '.', external: NO_EXTERNAL, byteSize: input.length, dataFiles: [] };
  const reload = (): LoadedModel => ({ ...loaded, model: parseModel(input, fileName) });
  const job: Job = { loaded, model: new Model(proto), inPath: fileName, opts, timings, reload };
  const notes: string[] = [...cfg.defaults ?? []];

  hooks.onStage?.('learning shapes');
  const sh = await timed(timings, 'shapes', () => shapesFor(job.loaded, job.model, cfg.shapes, cfg.values));
  if (sh.note) notes.push(sh.note);
  if (sh.defaulted.length > 0) notes.push(`dynamic dims set to 1 (set a shape): ${sh.defaulted.map((d) => `${d.input}[${d.axis}]`).join(', ')}`);
  const before = summarize(job.loaded.model, findLayers(job.model, sh.shapes));

  const gemm = hooks.gemm;
  const [products, fallbacks] = [gemm?.products ?? 0, gemm?.fallbacks ?? 0];
  const run = { external: NO_EXTERNAL, gemm, onProgress: hooks.onProgress };
  let layers: LayerRecord[];
  let budget: PageBudgetOutcome | undefined;
  if (cfg.budget) {
    budget = await runPageBudget(job, cfg, { input, shapes: sh.shapes, before, calibration: hooks.calibration, run });
    layers = budget.records;
    notes.push(...budget.notes);
  } else {
    hooks.onStage?.('decomposing layers');
    layers = await timed(timings, 'factorization', () => optimizeModel(job.model, sh.shapes, opts, undefined, run));
    notes.push('rewrites kept when they lower params and MACs (as --save params)');
  }
  if (!gemm) notes.push(`factorizations ran in the JS GEMM${hooks.noGemm ? ` (${hooks.noGemm})` : ''}`);
  else {
    const [p, f] = [gemm.products - products, gemm.fallbacks - fallbacks];
    notes.push(`factorizations: ${p} large product(s) ran in ${gemm.name}, the others in JS${f > 0 ? `; ${f} ran in JS after it failed or did not answer` : ''}`);
  }
  // A budgeted run may have reloaded the model: the rewritten one is the job's.
  const rewritten = job.loaded.model;
  const policy = cfg.budget ? budgetLabel(cfg.budget) : policyLabel(opts);
  const output = { file: fileName.replace(/(\.onnx)?$/i, '.lr.onnx'), summary: summarize(rewritten) };

  hooks.onStage?.('writing');
  const body = await timed(timings, 'write', () => encodeModel(withRunMetadata(rewritten, cfg)));
  const written: Measured & { notes: string[] } = { bytes: body.length, notes: [] };
  if (cfg.verify.enabled) {
    const v = cfg.verify;
    hooks.onStage?.('checking agreement in ONNX Runtime Web');
    const res = await timed(timings, 'verification', () => verifyModels({ bytes: input }, { bytes: body }, {
      backend: 'web', seed: opts.seed, shapes: cfg.shapes, inputs: cfg.values, minCosine: v.minCosine, threads: hooks.threads ?? 1,
      atol: v.atol ?? Infinity, rtol: v.rtol ?? 0,
    }));
    if (!res.ok) throw new LrError(res.error.kind, `cannot verify: ${res.error.message}`);
    written.verify = { ...res.value, minCosine: v.minCosine, atol: v.atol, rtol: v.rtol };
    written.inputs = 'seeded random inputs';
    if (v.latency) {
      hooks.onStage?.('measuring latency in ONNX Runtime Web');
      const lat = await timed(timings, 'latencyWeb', () => measureLatency({ bytes: input }, { bytes: body }, {
        backend: 'web', shapes: cfg.shapes, values: cfg.values, clock, threads: hooks.threads ?? 1, ...PAGE_TIMING,
      }));
      if (lat.ok) written.latencyWeb = lat.value; else written.notes.push(`web latency not measured: ${lat.error.message}`);
    }
  }
  // Appended as write-verify.ts appends it: fields of a message may come in any order.
  const verdict = encodeAs('ModelProto', { metadataProps: [{ key: METADATA_KEYS.verdict, value: verdictOf(written) }] });
  const bytes = new Uint8Array(body.length + verdict.length);
  bytes.set(body);
  bytes.set(verdict, body.length);
  written.bytes = bytes.length;
  const report = buildReport({
    tool: `${TOOL_NAME} ${TOOL_VERSION}`, seed: opts.seed, policy,
    input: { file: fileName, bytes: input.length, ...before },
    output, layers, timings, notes, written, seconds: (performance.now() - t0) / 1000,
    ...(budget && { budget: budget.budgetInfo, calibration: budget.calibration, sensitivity: budget.sensitivity }),
  });
  return { bytes, report, pass: written.verify?.pass ?? true };
}
