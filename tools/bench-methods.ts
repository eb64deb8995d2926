/**
 * npm run bench:methods [-- --models=det,isnet] [-- --methods=auto,tucker2,cp] [-- --rank-ratio=0.5]
 *                       [-- --isnet=PATH] [-- --isnet-layers=2|stage1/rebnconvin,…] [-- --data-aware] [-- --no-web]
 *
 * Per-method rows (issue 19's "which decomposition wins where"): each `--method` at the
 * same rank ratio (about that fraction of every rewritten layer's params, so outputs are
 * compared at equal budget), on
 * - det: the whole PP-OCRv4 detector (devDependency), every layer its method takes;
 * - ISNet's heaviest convs (isnet-model.ts; the first --isnet-layers of ISNET_HEAVY_CONVS,
 *   or those named), each cut out alone at its real input shape (1024² image), as ISNet
 *   runs whole in minutes. Each layer takes minutes (auto fits every method at 512²).
 * Each optimize runs without latency (--no-latency: every rewrite that lowers params and
 * MACs is kept, faster or not); with auto and tucker2 among the methods, one more row runs
 * auto with Tucker-2's whole-model params as its budget (`--target-params`), as auto's own
 * row shrinks the rivals that win and so ends below the others' params, verified on seeded random inputs. Then the original and
 * every method's output are timed together, interleaved (timeSessions: every model once
 * per round, starting one further along each round), in ORT-node (1 thread) and
 * onnxruntime-web (wasm): the speed-ups are medians of one such run.
 *
 * --data-aware (det only): calibrate on 8 seeded N(0,1) inputs (--calib), as
 * `npm run bench`'s data-aware settings do.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { METHOD_CHOICES } from '../passes/dispatch.js';
import { REAL_MODELS, realModelArgs } from '../models/real.js';
import { main } from '../src/cli/main.js';
import { Model } from '../src/graph/graph.js';
import { findLayers } from '../src/graph/layers.js';
import { learnShapes } from '../src/graph/shapes.js';
import { writeNpy } from '../src/io/npy.js';
import { encodeModel } from '../src/onnx/codec.js';
import { loadModel } from '../src/onnx/load.js';
import { singleLayerModel } from '../src/optimize/layer-latency.js';
import { table } from '../src/report/format.js';
import type { Report } from '../src/report/report.js';
import { createRng } from '../src/util/rng.js';
import { speedups } from './bench-speedups.js';
import { flag, intOption, loadLine } from './bench-util.js';
import { ensureIsnet, ISNET_HEAVY_CONVS } from './isnet-model.js';

const TOOL = 'bench:methods';
const argv = process.argv.slice(2);
const option = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const fail = (msg: string): never => { process.stderr.write(`${TOOL}: ${msg}\n`); process.exit(2); };

const models = (option('models') ?? 'det,isnet').split(',');
for (const m of models) if (m !== 'det' && m !== 'isnet') fail(`--models takes det and/or isnet, got ${m}`);
const methods = option('methods')?.split(',') ?? [...METHOD_CHOICES];
for (const m of methods) if (!(METHOD_CHOICES as readonly string[]).includes(m)) fail(`--methods: unknown method ${m} (choices: ${METHOD_CHOICES.join(', ')})`);
const ratio = option('rank-ratio') ?? '0.5';
if (!(Number(ratio) > 0 && Number(ratio) <= 1)) fail(`--rank-ratio must be in (0, 1], got ${ratio}`);
// A count (the heaviest first) or a list of ISNET_HEAVY_CONVS names.
const layerArg = option('isnet-layers') ?? '2';
const isnetLayers = /^\d+$/.test(layerArg) ? ISNET_HEAVY_CONVS.slice(0, intOption(argv, 'isnet-layers', 2, TOOL)) : layerArg.split(',');
const dataAware = flag(argv, 'data-aware');
const web = !argv.includes('--no-web');

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-bench-methods-'));

/** What to optimize: a model file and the CLI arguments that give its inputs' shapes and values. */
interface Target { label: string; file: string; args: string[]; shapes: Record<string, number[]>; methods: string[] }

function detTarget(): Target {
  const det = REAL_MODELS.det;
  const dims = det.shapes[0]!.split(':')[1]!.split('x').map(Number);
  const args = realModelArgs('det', dir);
  if (dataAware) {
    const calibDims = [8, ...dims.slice(1)];
    const rng = createRng(11);
    const f = path.join(dir, 'det-calib.npy');
    const r = writeNpy(f, { dtype: 'f4', shape: calibDims, data: Float32Array.from({ length: calibDims.reduce((a, b) => a * b, 1) }, () => rng.normal()) });
    if (!r.ok) throw r.error;
    args.push('--calib', f);
  }
  return { label: `det (whole model${dataAware ? ', data-aware' : ''})`, file: det.path, args, shapes: { x: dims }, methods };
}

/** ISNet's heaviest convs, each alone as a model at its input shape in the whole model. */
async function isnetTargets(): Promise<Target[]> {
  let loaded;
  try { loaded = loadModel(option('isnet') ?? ensureIsnet()); } catch (e) { return fail(`--isnet: ${(e as Error).message}`); }
  const model = new Model(loaded.model);
  const layers = findLayers(model);
  const heavy = isnetLayers.map((h) => {
    const l = layers.find((x) => x.node.name?.startsWith(`/${h}/`));
    return l ?? fail(`ISNet has no conv named /${h}/… (is --isnet the medium model?)`);
  });
  const learned = await learnShapes(loaded.model, { names: heavy.map((l) => l.node.input[0]!), external: loaded.external, modelDir: loaded.dir });
  if (!learned.ok) throw new Error(learned.error.message);
  const out: Target[] = [];
  for (const [i, l] of heavy.entries()) {
    const m = singleLayerModel(model, l, learned.value.shapes, loaded.external);
    if (typeof m === 'string') throw new Error(`${l.name}: ${m}`);
    const file = path.join(dir, `isnet-${i}.onnx`);
    writeFileSync(file, encodeModel(m));
    const inDims = learned.value.shapes.get(l.node.input[0]!)!;
    out.push({
      label: `ISNet ${isnetLayers[i]} ${l.weightShape.join('x')} @${inDims.slice(2).join('x')}`,
      file, args: [], shapes: {}, methods: methods.filter((x) => x !== 'svd'),
    });
  }
  return out;
}

interface Row {
  target: string; method: string; error?: string; rewritten: number; passes: string; paramsRatio: number; macsRatio: number | null;
  minCosine: number | null; maxRelL2: number | null; factorS: number; file: string; node?: number; web?: number;
}

async function optimizeWith(t: Target, method: string, budget?: { label: string; args: string[] }): Promise<Row> {
  const file = path.join(dir, `${path.basename(t.file, '.onnx')}-${method}${budget ? '-budget' : ''}.onnx`);
  let out = '';
  let errText = '';
  const code = await main(['optimize', t.file, file, ...t.args, '--method', method, ...(budget?.args ?? ['--rank-ratio', ratio]), '--no-latency', '--json'],
    { out: (s) => { out += s; }, err: (s) => { errText += s; } });
  const base = { target: t.label, method: budget ? `${method} ${budget.label}` : method, file, rewritten: 0, passes: '', paramsRatio: 1, macsRatio: null, minCosine: null, maxRelL2: null, factorS: 0 };
  if (code === 2) return { ...base, error: errText.trim().split('\n')[0] ?? 'exit 2' };
  const r = JSON.parse(out) as Report;
  const done = r.layers.filter((l) => !l.skipped);
  const byPass = new Map<string, number>();
  for (const l of done) byPass.set(l.pass ?? '?', (byPass.get(l.pass ?? '?') ?? 0) + 1);
  return {
    ...base, rewritten: done.length, passes: [...byPass].map(([p, n]) => `${p} ${n}`).join(', '),
    paramsRatio: r.output.params / r.input.params,
    macsRatio: r.input.macs && r.output.macs !== undefined ? r.output.macs / r.input.macs : null,
    minCosine: r.verify ? Math.min(...r.verify.outputs.map((o) => o.cosine)) : null,
    maxRelL2: r.verify ? Math.max(...r.verify.outputs.map((o) => o.relL2)) : null,
    factorS: r.timings?.factorization ?? 0,
  };
}

const cpuFlags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1]?.split(/\s+/) ?? [];
const isa = cpuFlags.includes('avx512f') ? 'AVX-512' : cpuFlags.includes('avx2') ? 'AVX2' : 'no AVX2';
console.log(`machine: ${cpus()[0]?.model ?? '?'} (${isa}), ${cpus().length} cores; ORT-node 1 thread${web ? ', ORT-web wasm 1 thread' : ''}; rank ratio ${ratio}; load before: ${loadLine()}`);

const f = (x: number | null | undefined, d = 3): string => (x === null || x === undefined ? '-' : x.toFixed(d));
const printRows = (rs: readonly Row[]): void => console.log(table(
  ['target', 'method', 'layers', 'params', 'MACs', 'node speed-up', 'wasm speed-up', 'min cosine', 'rel L2', 'factor s', 'passes / error'],
  rs.map((r) => [r.target, r.method, String(r.rewritten), f(r.paramsRatio), f(r.macsRatio), f(r.node, 2), f(r.web, 2), f(r.minCosine, 4), f(r.maxRelL2, 4), f(r.factorS, 1), r.error ?? r.passes]),
  ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
));

const targets: Target[] = [];
if (models.includes('det')) targets.push(detTarget());
if (models.includes('isnet')) targets.push(...await isnetTargets());
const rows: Row[] = [];
for (const t of targets) {
  const mine: Row[] = [];
  for (const m of t.methods) {
    const row = await optimizeWith(t, m);
    process.stderr.write(`done ${t.label} / ${m}${row.error ? `: ${row.error}` : ''} (${row.factorS.toFixed(1)} s factorization)\n`);
    mine.push(row);
  }
  // auto shrinks a rival that wins to the smallest rank within its error, so its row above
  // ends below the others' params; at equal budget it gets Tucker-2's whole-model params as
  // a --target-params budget (allocated globally over the same layers).
  const tucker = mine.find((r) => r.method === 'tucker2' && !r.error && r.rewritten > 0);
  if (t.methods.includes('auto') && tucker) {
    const target = tucker.paramsRatio.toFixed(4);
    const row = await optimizeWith(t, 'auto', { label: `@ params ${target}`, args: ['--target-params', target] });
    process.stderr.write(`done ${t.label} / auto at equal params${row.error ? `: ${row.error}` : ''}\n`);
    mine.push(row);
  }
  const timed = mine.filter((r) => !r.error && r.rewritten > 0);
  const node = await speedups(t, timed.map((r) => r.file), 'node');
  const wasm = web ? await speedups(t, timed.map((r) => r.file), 'web') : [];
  timed.forEach((r, i) => { r.node = node[i]; r.web = wasm[i]; });
  rows.push(...mine);
  // Each target's rows as soon as they are measured (a long run stopped early keeps them).
  if (targets.length > 1) { printRows(mine); console.log(`load: ${loadLine()}\n`); }
}
printRows(rows);
console.log(`load after: ${loadLine()}`);

