/**
 * npm run bench:weights [-- --models=rec,isnet] [-- --json] [-- --energies=0.999,0.995] [-- --cache=DIR] [-- --verbose] [-- --no-web]
 *                       [-- --issue-rows]
 * File size at held-out cosine ≥ 0.99 for three ways to make a model smaller (issue 20):
 *
 *   low-rank          `onnx-lr optimize --energy E --save params` (fixed, cheap settings:
 *                     no error budget, no per-layer latency screen; ISNet with
 *                     --method tucker2, as auto's CP rivals on its 119 convs take an hour)
 *   int8              every layer weight int8 per output channel, weight-only QDQ, no
 *                     low-rank (src/rewrite/quantize-weights.ts); and only the weights of
 *                     4096 params or more (small layers stay as they are)
 *   low-rank + int8   the low-rank file with its new factors int8: the tensors and the
 *   factors           quantizer of `--weights int8` (see int8All below)
 *   low-rank, int8 all the low-rank output with every weight int8 (factors and the layers
 *                     low-rank left alone), as the int8 row does it
 *
 * Each low-rank setting runs at every energy of a short ladder (default 0.999, 0.995, 0.99),
 * and the table marks the smallest file that keeps the worst checked output's cosine
 * ≥ 0.99 on held-out inputs. Every file is verified and timed here the same way (one
 * thread, ORT-node, latency interleaved with the original's), so the columns compare.
 * Then a model's files are timed again in onnxruntime-web (wasm, in node, one thread),
 * all of them with the original in one interleaved loop (tools/bench-speedups.ts, as
 * bench:methods does; ISNet's in loops of three files, as each wasm session holds its
 * model): the "web" columns. --no-web skips them.
 *
 * Held-out inputs: ISNet (--models=isnet, cached by tools/isnet-model.ts) on three real
 * photos (tools/photos.ts, the held-out half) judging its mask output; PP-OCR rec on three
 * seeded random inputs at 1x3x48x320 (no real text images ship with the package).
 */
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REAL_MODELS, realModelArgs } from '../models/real.js';
import { ensureIsnet, ISNET_IMAGE_ARGS } from './isnet-model.js';
import { ensurePhotos } from './photos.js';
import { timeInterleaved } from './bench-speedups.js';
import { loadLine } from './bench-util.js';
import { main } from '../src/cli/main.js';
import { loadCalibration } from '../src/calib/load.js';
import { Model } from '../src/graph/graph.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { loadModel } from '../src/onnx/load.js';
import { saveModel } from '../src/onnx/save.js';
import { quantizeAllWeights } from '../src/rewrite/quantize-weights.js';
import { table } from '../src/report/format.js';
import type { Feeds } from '../src/verify/tensor.js';
import { measureLatency } from '../src/verify/latency.js';
import { createSession } from '../src/verify/session.js';
import { verifyModels } from '../src/verify/verify.js';

const argv = process.argv.slice(2);
const json = argv.includes('--json');
// --verbose: optimize's progress lines on stderr.
const verbose = argv.includes('--verbose');
const models = (argv.find((a) => a.startsWith('--models='))?.slice(9).split(',') ?? ['rec']) as ('rec' | 'isnet')[];
const energies = argv.find((a) => a.startsWith('--energies='))?.slice(11).split(',').map(Number) ?? [0.999, 0.995, 0.99];
// --cache=DIR: where ISNet and the photos are (or go); default node_modules/.cache/onnx-lr.
const cache = argv.find((a) => a.startsWith('--cache='))?.slice(8);
const web = !argv.includes('--no-web');
// --issue-rows: leave out the int8-large and "low-rank, int8 all" variants.
const issueRows = argv.includes('--issue-rows');
const MIN_COSINE = 0.99;
/** The int8 row's second variant leaves the layers low-rank leaves by default (--min-params 4096) in their type. */
const LARGE = 4096;
const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-bench-weights-'));

interface Subject {
  name: string;
  path: string;
  /** CLI arguments every optimize run of it takes (shapes, fixed inputs). */
  args: string[];
  shapes: Record<string, number[]>;
  /** Held-out feeds (undefined: the verification's seeded random inputs). */
  feeds?: Feeds[];
  outputs?: string[];
  held: string;
}

async function subject(name: 'rec' | 'isnet'): Promise<Subject> {
  if (name === 'rec') {
    const m = REAL_MODELS.rec;
    return { name, path: m.path, args: realModelArgs('rec', dir), shapes: { x: [1, 3, 48, 320] }, held: '3 seeded random inputs' };
  }
  const file = ensureIsnet(cache);
  const photos = ensurePhotos(cache);
  const image = (flag: string): number[] => ISNET_IMAGE_ARGS[ISNET_IMAGE_ARGS.indexOf(flag) + 1]!.split(',').map(Number);
  const s = await createSession({ path: file }, { graphOptimizationLevel: 'disabled' });
  if (!s.ok) throw s.error;
  const inputs = [...s.value.inputs];
  await s.value.release();
  const set = loadCalibration(photos.held, { inputs, mean: image('--mean'), std: image('--std'), seed: 0, purpose: 'verification' });
  if (!set.ok) throw set.error;
  // Tucker-2 alone: auto's CP and spatial-SVD rivals on 119 3x3 convs at 1024² take an hour here.
  return { name, path: file, args: ['--method', 'tucker2'], shapes: {}, feeds: [...set.value.feeds()], outputs: ['output'], held: '3 held-out photos, mask output' };
}

interface Row {
  model: string; method: string; setting: string; bytes: number; cosine: number; pass: boolean; speedup: number | null; ms: number | null; toolS: number;
  /** The file timed (the original's own path, or the bench's temp folder): the web timing runs once a model's rows are made. */
  file: string;
  /** onnxruntime-web (wasm): original p50 / this file's p50, and this file's p50 (the original row: its own). */
  webSpeedup: number | null; webMs: number | null;
}

/** Verifies and times `file` against the subject's original the same way for every row. */
async function judge(s: Subject, file: string): Promise<{ cosine: number; speedup: number | null; ms: number | null }> {
  const v = await verifyModels({ path: s.path }, { path: file }, { feeds: s.feeds, shapes: s.shapes, outputs: s.outputs, minCosine: MIN_COSINE, atol: Infinity, rtol: 0, threads: 1 });
  if (!v.ok) throw v.error;
  const checked = v.value.outputs.filter((o) => o.checked !== false);
  const cosine = Math.min(...checked.map((o) => o.cosine));
  const lat = await measureLatency({ path: s.path }, { path: file }, { threads: 1, shapes: s.shapes, maxSeconds: s.name === 'isnet' ? 20 : 10, fewestRuns: 5, warmupSeconds: 2 });
  return { cosine, speedup: lat.ok ? lat.value.speedup : null, ms: lat.ok ? lat.value.optimizedMs.p50 : null };
}

/** `onnx-lr optimize` without its own verification (judged here like every row). */
async function optimize(s: Subject, out: string, args: string[]): Promise<number> {
  const t0 = performance.now();
  let err = '';
  // --save params: file size is the point (and no per-layer latency screen at 1024²).
  const code = await main(['optimize', s.path, out, ...s.args, ...args, '--save', 'params', '--no-verify', '--force', '--json'], { out: () => {}, err: (t) => { err += t; if (verbose) process.stderr.write(`${t}\n`); } });
  if (code === 2) throw new Error(`${s.name} optimize ${args.join(' ')}: ${err}`);
  return (performance.now() - t0) / 1000;
}

const rows: Row[] = [];
async function add(s: Subject, method: string, setting: string, file: string, toolS: number): Promise<void> {
  const j = await judge(s, file);
  const row: Row = {
    model: s.name, method, setting, bytes: statSync(file).size, cosine: j.cosine, pass: j.cosine >= MIN_COSINE, speedup: j.speedup, ms: j.ms, toolS, file, webSpeedup: null, webMs: null,
  };
  rows.push(row);
  if (!json) process.stderr.write(`done ${s.name} / ${method} / ${setting}: ${(row.bytes / 2 ** 20).toFixed(2)} MiB, cosine ${row.cosine.toFixed(4)}\n`);
}

/**
 * Every weight of `file` int8 (the int8 rows), written to `out`; with `factorsOnly` only
 * the weights of the chain nodes a rewrite emitted (their doc strings start "onnx-lr:"):
 * the tensors `--weights int8` stores, with the same quantizer (quantize-store.ts), made
 * from the low-rank file instead of a second optimize run (12 minutes on ISNet here).
 */
function int8All(file: string, out: string, which: 'all' | 'factors' | 'large' = 'all'): number {
  const t0 = performance.now();
  const loaded = loadModel(file);
  try {
    const only = which === 'factors' ? (l: LayerInfo): boolean => (l.node.docString ?? '').startsWith('onnx-lr:')
      : which === 'large' ? (l: LayerInfo): boolean => l.params >= LARGE : undefined;
    quantizeAllWeights(new Model(loaded.model), { external: loaded.external, ...(only && { only }) });
    saveModel(loaded, out, { force: true });
  } finally {
    loaded.external.close();
  }
  return (performance.now() - t0) / 1000;
}

for (const name of models) {
  const s = await subject(name);
  const original: Row = { model: name, method: 'original', setting: '-', bytes: statSync(s.path).size, cosine: 1, pass: true, speedup: 1, ms: null, toolS: 0, file: s.path, webSpeedup: web ? 1 : null, webMs: null };
  rows.push(original);
  const q = path.join(dir, `${name}-int8.onnx`);
  await add(s, 'int8', 'every weight, per output channel', q, int8All(s.path, q));
  if (!issueRows) {
    const ql = path.join(dir, `${name}-int8-large.onnx`);
    await add(s, 'int8', `weights of >= ${LARGE} params (--min-params default)`, ql, int8All(s.path, ql, 'large'));
  }
  for (const e of energies) {
    const lr = path.join(dir, `${name}-lr-${e}.onnx`);
    await add(s, 'low-rank', `--energy ${e}`, lr, await optimize(s, lr, ['--energy', String(e)]));
    const lq = path.join(dir, `${name}-lr-${e}-int8.onnx`);
    await add(s, 'low-rank + int8 factors', `--energy ${e}, factors int8`, lq, int8All(lr, lq, 'factors'));
    if (issueRows) continue;
    const la = path.join(dir, `${name}-lr-${e}-int8all.onnx`);
    await add(s, 'low-rank, int8 all', `--energy ${e}, then every weight int8`, la, int8All(lr, la));
  }
  const made = rows.filter((r) => r.model === name && r !== original);
  if (web) {
    // ISNet's wasm sessions hold ~100 MiB of weights and 1024² activations each: a few per loop.
    const perLoop = name === 'isnet' ? 3 : made.length;
    for (let i = 0; i < made.length; i += perLoop) {
      const part = made.slice(i, i + perLoop);
      if (!json) process.stderr.write(`timing ${name} in onnxruntime-web (wasm): ${part.length} file(s) with the original (load ${loadLine()})\n`);
      const { ms } = await timeInterleaved({ file: s.path, shapes: s.shapes }, part.map((r) => r.file), 'web');
      original.webMs ??= ms[0]!;
      part.forEach((r, k) => { r.webMs = ms[k + 1]!; r.webSpeedup = ms[0]! / ms[k + 1]!; });
    }
  }
  if (json) for (const r of [original, ...made]) process.stdout.write(`${JSON.stringify(r)}\n`);
  else process.stderr.write(`${name}: held-out inputs: ${s.held}\n`);
}

if (!json) {
  const mib = (b: number): string => (b / 2 ** 20).toFixed(2);
  console.log(table(
    ['model', 'method', 'setting', 'MiB', 'size', 'held-out cosine', '>= 0.99', 'node speed-up', 'node ms', 'web speed-up', 'web ms', 'tool s'],
    rows.map((r) => {
      const orig = rows.find((o) => o.model === r.model && o.method === 'original')!;
      const f = (x: number | null, d: number): string => (x === null ? '-' : x.toFixed(d));
      return [r.model, r.method, r.setting, mib(r.bytes), (r.bytes / orig.bytes).toFixed(3), r.cosine.toFixed(4), r.pass ? 'yes' : 'no',
        f(r.speedup, 2), f(r.ms, 1), f(r.webSpeedup, 2), f(r.webMs, 1), r.toolS.toFixed(1)];
    }),
    ['l', 'l', 'l', 'r', 'r', 'r', 'l', 'r', 'r', 'r', 'r', 'r'],
  ));
  console.log(`load after: ${loadLine()}`);
  // The issue's figure: the smallest file at held-out cosine >= 0.99, per method.
  console.log('\nsmallest file at held-out cosine >= 0.99:');
  for (const m of new Set(rows.map((r) => r.model))) {
    const orig = rows.find((o) => o.model === m && o.method === 'original')!;
    for (const method of ['low-rank', 'int8', 'low-rank + int8 factors', 'low-rank, int8 all']) {
      if (!rows.some((r) => r.model === m && r.method === method)) continue;
      const best = rows.filter((r) => r.model === m && r.method === method && r.pass).sort((a, b) => a.bytes - b.bytes)[0];
      console.log(`  ${m} ${method}: ${best ? `${mib(best.bytes)} MiB (${(best.bytes / orig.bytes).toFixed(3)} of ${mib(orig.bytes)} MiB) at ${best.setting}, cosine ${best.cosine.toFixed(4)}` : 'none of the settings tried'}`);
    }
  }
}
