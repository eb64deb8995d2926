/** `onnx-lr optimize IN OUT` and `onnx-lr plan IN`: the main job. */
import { readFileSync } from 'node:fs';
import { LrError } from '../errors.js';
import { Model } from '../graph/graph.js';
import { findLayers } from '../graph/layers.js';
import { summarize } from '../graph/summary.js';
import { loadModel, saveModel, type LoadedModel } from '../onnx/file.js';
import { DEFAULT_MIN_PARAMS, optimizeModel, policyLabel, type MethodChoice, type OptimizeOptions } from '../optimize/driver.js';
import { parsePlan, type PlanFile } from '../optimize/plan.js';
import { renderReport, type Report } from '../report/report.js';
import type { RankPolicy } from '../rewrite/rank-policy.js';
import { writeFileAtomic } from '../util/fsio.js';
import { measureLatency } from '../verify/latency.js';
import { verifyModels } from '../verify/verify.js';
import { flag, num, parse, str, strs, expectPositionals, type Options, type Parsed } from './args.js';
import { feedOverrides } from './feeds.js';
import { shapesFor } from './inspect.js';

const RANK_OPTIONS = `Rank choice (one of; default --energy ${0.999}):
  --energy E          smallest rank keeping fraction E of the weight's energy (Σσ²)
  --rank-ratio R      keep about fraction R of each layer's parameters
  --vbmf              EVBMF estimate (Nakajima et al. 2013), no setting needed
  --rank N            the same rank N everywhere (clamped to each layer)
  --align N           round ranks up to a multiple of N (e.g. 8)
Layer selection:
  --method M          auto | svd | tucker2 | cp (default auto: SVD for Gemm/MatMul/1x1
                      conv, Tucker-2 for kxk conv)
  --exclude REGEX     leave layers whose node or weight name matches
  --min-params N      leave layers with fewer weight parameters (default ${DEFAULT_MIN_PARAMS})
  --seed N            seed for randomized numerics and verification inputs (default 0)
Shapes and inputs:
  --shape NAME:DIMS   concrete dims for a dynamic input, e.g. x:1x3x640x640 (repeatable)
  --input NAME:FILE   a .npy value for an input (repeatable)`;

export const OPTIMIZE_HELP = `Usage: onnx-lr optimize IN OUT [options]

Rewrites Gemm/MatMul layers with a constant weight into SVD pairs and Conv layers into
Tucker-2 or CP chains, keeping each rewrite only when it lowers both parameters and
MACs. Writes OUT atomically (IN is never modified), then loads IN and OUT in ONNX Runtime
with seeded random inputs, compares the outputs, measures latency and prints a
before/after table. Exit code 0 when the check passes, 1 when it fails (OUT is still
written), 2 for bad input.

${RANK_OPTIONS}
  --plan FILE         apply the decisions of a plan (from 'onnx-lr plan') exactly
Verification:
  --min-cosine C      pass when every output's cosine similarity is at least C (default 0.99)
  --atol A --rtol R   also require |opt - orig| <= A + R*|orig| elementwise (Polygraphy style)
  --no-verify         skip the ORT comparison and latency
  --no-latency        compare outputs but do not measure latency
  --threads N         ORT intra-op threads for verification and latency (default 1)
  --bench-web         also measure latency in onnxruntime-web's wasm backend
Output:
  --report FILE       write the full report as JSON
  --json              print the JSON report instead of the table
  --all-layers        list skipped layers with their reasons in the table
  --external-data     store OUT's large tensors in OUT.data
  --force             allow OUT to overwrite IN
  -h, --help          this help`;

export const PLAN_HELP = `Usage: onnx-lr plan IN [options] > plan.json

Prints the per-layer decisions optimize would make (pass, method, ranks, expected params
and MACs, weight error) as JSON, without writing a model. Edit it and apply it exactly
with 'onnx-lr optimize IN OUT --plan plan.json'.

${RANK_OPTIONS}
  -h, --help          this help`;

const COMMON: Options = {
  method: { type: 'string' }, energy: { type: 'string' }, 'rank-ratio': { type: 'string' }, vbmf: { type: 'boolean' },
  rank: { type: 'string' }, align: { type: 'string' }, exclude: { type: 'string' }, 'min-params': { type: 'string' },
  seed: { type: 'string' }, shape: { type: 'string', multiple: true }, input: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
};

const OPTIMIZE_ONLY: Options = {
  plan: { type: 'string' }, 'min-cosine': { type: 'string' }, atol: { type: 'string' }, rtol: { type: 'string' },
  'no-verify': { type: 'boolean' }, 'no-latency': { type: 'boolean' }, threads: { type: 'string' }, 'bench-web': { type: 'boolean' },
  report: { type: 'string' }, json: { type: 'boolean' }, 'all-layers': { type: 'boolean' }, 'external-data': { type: 'boolean' },
  force: { type: 'boolean' },
};

export const DEFAULT_ENERGY = 0.999;
export const DEFAULT_MIN_COSINE = 0.99;

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

function optionsFrom(p: Parsed, loaded: LoadedModel): OptimizeOptions {
  const method = (str(p, 'method') ?? 'auto') as MethodChoice;
  if (!['auto', 'svd', 'tucker2', 'cp'].includes(method)) throw new LrError('usage', `--method expects auto, svd, tucker2 or cp, got "${method}"`);
  let exclude: RegExp | undefined;
  const ex = str(p, 'exclude');
  if (ex !== undefined) {
    try { exclude = new RegExp(ex); } catch (e) { throw new LrError('usage', `--exclude: ${(e as Error).message}`); }
  }
  let plan: PlanFile | undefined;
  const planPath = str(p, 'plan');
  if (planPath !== undefined) {
    let text: string;
    try { text = readFileSync(planPath, 'utf8'); } catch (e) { throw new LrError('io', `cannot read plan ${planPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`); }
    plan = parsePlan(text, planPath);
  }
  return {
    method, policy: policyFrom(p), exclude, plan,
    minParams: num(p, 'min-params', { min: 0, integer: true }) ?? DEFAULT_MIN_PARAMS,
    seed: num(p, 'seed', { min: 0, max: 2 ** 32 - 1, integer: true }) ?? 0,
    external: loaded.external,
  };
}

function progress(enabled: boolean): OptimizeOptions['onProgress'] {
  if (!enabled) return undefined;
  return (done, total, layer) => {
    process.stderr.write(done >= total ? '\r\x1b[K' : `\r\x1b[K[${done + 1}/${total}] ${layer.slice(0, 60)}`);
  };
}

export async function optimize(argv: readonly string[], io: { out: (s: string) => void; err: (s: string) => void }): Promise<number> {
  const p = parse(argv, { ...COMMON, ...OPTIMIZE_ONLY }, 'optimize');
  if (flag(p, 'help')) { io.out(OPTIMIZE_HELP); return 0; }
  const [inPath, outPath] = expectPositionals(p, 2, 'optimize', 'IN OUT');
  const t0 = performance.now();
  const minCosine = num(p, 'min-cosine', { min: -1, max: 1 }) ?? DEFAULT_MIN_COSINE;
  const atol = num(p, 'atol', { min: 0 });
  const rtol = num(p, 'rtol', { min: 0 });
  const threads = num(p, 'threads', { min: 1, max: 256, integer: true }) ?? 1;
  const { shapes: shapeArgs, values } = feedOverrides(strs(p, 'shape'), strs(p, 'input'));
  const loaded = loadModel(inPath);
  try {
    const opts = optionsFrom(p, loaded);
    opts.onProgress = progress(process.stderr.isTTY === true && !flag(p, 'json'));
    const model = new Model(loaded.model);
    const notes: string[] = [];
    const sh = await shapesFor(loaded, model, shapeArgs, values);
    if (sh.note) notes.push(sh.note);
    if (sh.defaulted.length > 0) notes.push(`dynamic dims set to 1 (use --shape): ${sh.defaulted.map((d) => `${d.input}[${d.axis}]`).join(', ')}`);
    const before = summarize(loaded.model, findLayers(model, sh.shapes));
    // Rewrites edit the proto in place: keep the original bytes' summary first, then rewrite.
    const layers = optimizeModel(model, sh.shapes, opts);
    const saved = saveModel({ model: loaded.model, external: loaded.external, path: loaded.path }, outPath, {
      force: flag(p, 'force'), ...(flag(p, 'external-data') ? { externalData: true } : {}),
    });
    const report: Report = {
      tool: 'onnx-lr 0.1.0', seed: opts.seed, policy: policyLabel(opts),
      input: { file: inPath, bytes: loaded.byteSize, ...before },
      output: { file: outPath, bytes: saved.bytes + (saved.externalBytes ?? 0), ...summarize(loaded.model) },
      layers, seconds: 0, notes,
    };
    // MACs after: the original layers' MACs with each rewritten layer's share replaced.
    if (before.macs !== undefined) report.output.macs = layers.reduce((a, l) => a + (l.macsAfter ?? 0), 0);
    let pass = true;
    if (!flag(p, 'no-verify')) {
      const vopts = { seed: opts.seed, shapes: shapeArgs, inputs: values, minCosine, threads, ...(atol !== undefined && { atol }), ...(rtol !== undefined && { rtol }) };
      // Without --atol/--rtol only the cosine decides: a lossy rewrite never meets 1e-5.
      const v = await verifyModels({ path: loaded.path }, { path: saved.path }, { ...vopts, atol: atol ?? Infinity, rtol: rtol ?? 0 });
      if (!v.ok) throw v.error;
      report.verify = { ...v.value, minCosine, atol, rtol };
      report.inputs = Object.keys(values).length > 0 ? `--input ${Object.keys(values).join(', ')} + seeded random for the rest` : 'seeded random inputs';
      pass = v.value.pass;
      if (!flag(p, 'no-latency')) {
        const lat = await measureLatency({ path: loaded.path }, { path: saved.path }, { threads, shapes: shapeArgs, values });
        if (lat.ok) report.latency = lat.value; else notes.push(`latency not measured: ${lat.error.message}`);
        if (flag(p, 'bench-web')) {
          const web = await measureLatency({ path: loaded.path }, { path: saved.path }, { backend: 'web', shapes: shapeArgs, values });
          if (web.ok) report.latencyWeb = web.value; else notes.push(`web latency not measured: ${web.error.message}`);
        }
      }
    }
    report.seconds = (performance.now() - t0) / 1000;
    const reportPath = str(p, 'report');
    if (reportPath) writeFileAtomic(reportPath, [new TextEncoder().encode(JSON.stringify(report, null, 2) + '\n')]);
    io.out(flag(p, 'json') ? JSON.stringify(report, null, 2) : renderReport(report, { allLayers: flag(p, 'all-layers') }));
    return pass ? 0 : 1;
  } finally {
    loaded.external.close();
  }
}

export async function plan(argv: readonly string[], io: { out: (s: string) => void; err: (s: string) => void }): Promise<number> {
  const p = parse(argv, COMMON, 'plan');
  if (flag(p, 'help')) { io.out(PLAN_HELP); return 0; }
  const [inPath] = expectPositionals(p, 1, 'plan', 'IN');
  const { shapes: shapeArgs, values } = feedOverrides(strs(p, 'shape'), strs(p, 'input'));
  const loaded = loadModel(inPath);
  try {
    const opts = optionsFrom(p, loaded);
    opts.onProgress = progress(process.stderr.isTTY === true);
    const model = new Model(loaded.model);
    const sh = await shapesFor(loaded, model, shapeArgs, values);
    const layers = optimizeModel(model, sh.shapes, opts);
    const planFile: PlanFile = { version: 1, model: inPath, policy: policyLabel(opts), layers };
    io.out(JSON.stringify(planFile, null, 2));
    return 0;
  } finally {
    loaded.external.close();
  }
}
