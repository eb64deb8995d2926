/**
 * npm run bench:methods [-- --models=det,isnet] [-- --methods=tucker2,cp,spatial-svd,tt,cp4,auto] [-- --rank-ratio=0.5]
 *                       [-- --data=photos|random|none] [-- --isnet=PATH] [-- --isnet-layers=2|stage1/rebnconvin,…]
 *                       [-- --auto-own] [-- --no-web] [-- --keep]
 *
 * Per-method rows at equal budget (issue 19's "which decomposition wins where"): every
 * method on the same layers, each at the ranks that give about the same params, with its
 * output error on held-out inputs and its latency against the original.
 * - Layers: det (PP-OCRv4, the whole model, judged on its logits: a copy whose output is
 *   the final Sigmoid's input, as bench:anchor does) on the layers Tucker-2 takes at the
 *   rank ratio (its five dense 24x96x3x3 convs at 0.5); every other method is confined to
 *   them with --exclude. ISNet: its heaviest convs (isnet-model.ts; the first
 *   --isnet-layers of ISNET_HEAVY_CONVS, or those named), each cut out alone at its real
 *   input shape (1024² image), as ISNet runs whole in minutes.
 * - Budget: `--rank-ratio ρ` gives every method its ranks for ρ of each layer's params
 *   (each pass's ratio policy solves its own cost for it: Tucker-2 ranks (αS, αT), CP rank
 *   ⌊ρ·TSK/(S+T+K)⌋, …), so the rows differ only by rank rounding: "set params" shows it.
 *   auto gets Tucker-2's params as a `--target-params` budget with `--all-methods` (every
 *   method's rungs allocated over the same layers); the budget is an upper bound met on
 *   the sensitivity ladder's rungs (weight energies 0.5 … 0.999), so auto may end a rung
 *   below it ("set params" says where: on one ISNet layer 0.19 for a 0.49 target).
 *   auto at equal params: auto is run at the ratio (as a user runs it: a rival whose fit
 *   would cost more than COMPARE_WORK is not compared), and each layer then takes the method auto's comparison
 *   picked there, at that method's ranks for the ratio (its own row's fit), through a plan:
 *   auto's choices without the shrink that follows a win. `--auto-own` also shows that run
 *   itself, whose winning rivals are shrunk to the smallest rank within Tucker-2's error
 *   (fewer params). With several layers, one more row gives each
 *   layer the method whose fit at the ratio had the least calibration error (written
 *   through a plan, `optimize --plan`): the mix of methods at equal params.
 * - Data (`--data`): photos (default): the fits are data-aware, calibrated on three of the
 *   face-api photos and verified on the three others (tools/photos.ts; bench-data.ts):
 *   det on 12 views (whole and crops) of the calibration photos, 6 of the held-out ones,
 *   at 320²; ISNet's layers on their input activations computed by ISNet itself from the
 *   photos at 1024², so the error is the layer's output error on held-out activations.
 *   random: 8 seeded N(0,1) inputs to calibrate, 4 others held out (det only; ISNet
 *   layers weight-only). none: weight-only fits, errors on seeded random inputs.
 *   With calibration data det's fits are anchored (the CLI's default with --calib).
 * Each optimize runs without latency (--no-latency: every rewrite that lowers params and
 * MACs is kept, faster or not). Then the original and every method's output are timed
 * together, interleaved (timeSessions: every model once per round, starting one further
 * along each round), in ORT-node (1 thread) and onnxruntime-web (wasm, 1 thread): speed-ups
 * are ratios of medians within one such run.
 *
 * Files go to a temporary folder, removed at the end unless `--keep`. Each target prints
 * its rows once measured; a target that cannot be set up (ISNet or the photos not
 * fetchable) is skipped with the reason. Times here (2 cores, AVX-512): det 2–3 minutes,
 * ISNet's two layers about 9.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { METHOD_CHOICES } from '../passes/dispatch.js';
import { REAL_MODELS, realModelArgs } from '../models/real.js';
import { main } from '../src/cli/main.js';
import { Model } from '../src/graph/graph.js';
import { findLayers } from '../src/graph/layers.js';
import { learnShapes } from '../src/graph/shapes.js';
import { encodeModel } from '../src/onnx/codec.js';
import { loadModel } from '../src/onnx/load.js';
import { singleLayerModel } from '../src/optimize/layer-latency.js';
import { table } from '../src/report/format.js';
import type { LayerRecord } from '../src/report/records.js';
import type { Report } from '../src/report/report.js';
import { FOUR_VIEWS, layerInputs, type FloatArray, logitsModel, photoTensors, PPOCR_NORM, randomNpy, saveNpy, WHOLE } from './bench-data.js';
import { speedups } from './bench-speedups.js';
import { flag, intOption, loadLine, machineLine } from './bench-util.js';
import { ensureIsnet, ISNET_HEAVY_CONVS } from './isnet-model.js';
import { ensurePhotos } from './photos.js';

const TOOL = 'bench:methods';
const argv = process.argv.slice(2);
const option = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const fail = (msg: string): never => { process.stderr.write(`${TOOL}: ${msg}\n`); process.exit(2); };

const models = (option('models') ?? 'det,isnet').split(',');
for (const m of models) if (m !== 'det' && m !== 'isnet') fail(`--models takes det and/or isnet, got ${m}`);
const DEFAULT_METHODS = ['tucker2', 'cp', 'spatial-svd', 'tt', 'cp4', 'auto'];
const methods = option('methods')?.split(',') ?? DEFAULT_METHODS;
for (const m of methods) if (!(METHOD_CHOICES as readonly string[]).includes(m)) fail(`--methods: unknown method ${m} (choices: ${METHOD_CHOICES.join(', ')})`);
const ratio = option('rank-ratio') ?? '0.5';
if (!(Number(ratio) > 0 && Number(ratio) <= 1)) fail(`--rank-ratio must be in (0, 1], got ${ratio}`);
// A count (the heaviest first) or a list of ISNET_HEAVY_CONVS names.
const layerArg = option('isnet-layers') ?? '2';
const isnetLayers = /^\d+$/.test(layerArg) ? ISNET_HEAVY_CONVS.slice(0, intOption(argv, 'isnet-layers', 2, TOOL)) : layerArg.split(',');
// --data-aware (before --data existed) meant seeded N(0,1) calibration.
const data = option('data') ?? (flag(argv, 'data-aware') ? 'random' : 'photos');
if (!['photos', 'random', 'none'].includes(data)) fail(`--data takes photos, random or none, got ${data}`);
const autoOwn = flag(argv, 'auto-own');
const web = !argv.includes('--no-web');

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-bench-methods-'));

/** What to optimize: a model file, the CLI arguments giving its inputs' shapes, data and layers, and what its error is measured on. */
interface Target {
  label: string; file: string; args: string[]; data: string[]; shapes: Record<string, number[]>; judged: string;
  /** The layers compared, and an --exclude keeping only them (absent: the model's one layer). */
  set?: string[]; exclude?: string;
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');


/** ensurePhotos, or why not (no registry access): the caller falls back. */
function photos(): { calib: string; held: string } | string {
  try { return ensurePhotos(); } catch (e) { return (e as Error).message.split('\n')[0]!; }
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(args, { out: (s) => { out += s; }, err: (s) => { err += s; } });
  return { code, out, err };
}

async function detTarget(): Promise<Target> {
  const dims = REAL_MODELS.det.shapes[0]!.split(':')[1]!.split('x').map(Number);
  const file = logitsModel(REAL_MODELS.det.path, path.join(dir, 'det-logits.onnx'));
  const args = realModelArgs('det', dir);
  let dataArgs: string[] = [];
  let judged = 'seeded N(0,1) inputs (weight-only fits)';
  let mode = data;
  if (mode === 'photos') {
    const p = photos();
    if (typeof p === 'string') { process.stderr.write(`${TOOL}: photos unavailable (${p}): det falls back to --data=random\n`); mode = 'random'; }
    else {
      const [h, w] = [dims[2]!, dims[3]!];
      const calib = saveNpy(path.join(dir, 'det-calib.npy'), photoTensors(p.calib, h, w, PPOCR_NORM, FOUR_VIEWS));
      const held = saveNpy(path.join(dir, 'det-held.npy'), photoTensors(p.held, h, w, PPOCR_NORM, [WHOLE, FOUR_VIEWS[1]!]));
      dataArgs = ['--calib', calib, '--verify-data', held];
      judged = `logits on 6 held-out views of 3 photos (calibrated on 12 views of 3 others), ${h}x${w}`;
    }
  }
  if (mode === 'random') {
    dataArgs = ['--calib', randomNpy(dir, 'det-calib.npy', [8, ...dims.slice(1)], 11), '--verify-data', randomNpy(dir, 'det-held.npy', [4, ...dims.slice(1)], 77)];
    judged = 'logits on 4 held-out seeded N(0,1) inputs (calibrated on 8 others)';
  }
  // The layer set: what Tucker-2 takes at this ratio (weight-only, quick); every method is confined to it.
  const probe = await cli(['optimize', file, path.join(dir, 'det-probe.onnx'), ...args, '--method', 'tucker2', '--rank-ratio', ratio, '--no-latency', '--no-verify', '--json']);
  if (probe.code === 2) throw new Error(`det: layer-set probe failed: ${probe.err.split('\n')[0]}`);
  const set = (JSON.parse(probe.out) as Report).layers.filter((l) => !l.skipped && l.op === 'Conv').map((l) => l.name);
  const layers = findLayers(new Model(loadModel(file).model));
  // --exclude tests a layer's name and its weight's name: keep both of each layer of the set.
  const keep = layers.filter((l) => set.includes(l.name)).flatMap((l) => [l.name, l.weightName]);
  const shapes = layers.filter((l) => set.includes(l.name)).map((l) => l.weightShape.join('x'));
  return {
    label: `det ${[...new Set(shapes)].join(', ')} ×${set.length}`, file, args, data: dataArgs, shapes: { x: dims }, judged,
    set, exclude: `^(?!(?:${keep.map(escape).join('|')})$)`,
  };
}

/** ISNet's heaviest convs, each alone as a model at its input shape in the whole model, with their input activations on the photos. */
async function isnetTargets(): Promise<Target[]> {
  const loaded = loadModel(option('isnet') ?? ensureIsnet());
  const model = new Model(loaded.model);
  const layers = findLayers(model);
  const heavy = isnetLayers.map((h) => {
    const l = layers.find((x) => x.node.name?.startsWith(`/${h}/`));
    return l ?? fail(`ISNet has no conv named /${h}/… (is --isnet the medium model?)`);
  });
  const learned = await learnShapes(loaded.model, { names: heavy.map((l) => l.node.input[0]!), external: loaded.external, modelDir: loaded.dir });
  if (!learned.ok) throw new Error(learned.error.message);
  // Input activations on the photos: one pass of ISNet (cut down to these tensors) per photo.
  let acts: { calib: Map<string, FloatArray>; held: Map<string, FloatArray> } | undefined;
  let judged = 'the layer output on seeded random inputs (weight-only fits)';
  if (data === 'photos') {
    const p = photos();
    if (typeof p === 'string') process.stderr.write(`${TOOL}: photos unavailable (${p}): ISNet layers weight-only\n`);
    else {
      const norm = { mean: [0.502, 0.502, 0.502], std: [1.004, 1.004, 1.004] };
      const names = heavy.map((l) => l.node.input[0]!);
      process.stderr.write('ISNet: input activations of the layers on 3 + 3 photos at 1024²…\n');
      acts = {
        calib: await layerInputs(loaded.model, loaded.external, names, photoTensors(p.calib, 1024, 1024, norm)),
        held: await layerInputs(loaded.model, loaded.external, names, photoTensors(p.held, 1024, 1024, norm)),
      };
      judged = 'the layer output on the input activations of 3 held-out photos (calibrated on those of 3 others), 1024² image';
    }
  } else if (data === 'random') process.stderr.write(`${TOOL}: --data=random: ISNet layers weight-only (random inputs say nothing of a layer's activations)\n`);
  const out: Target[] = [];
  for (const [i, l] of heavy.entries()) {
    const m = singleLayerModel(model, l, learned.value.shapes, loaded.external);
    if (typeof m === 'string') throw new Error(`${l.name}: ${m}`);
    const file = path.join(dir, `isnet-${i}.onnx`);
    writeFileSync(file, encodeModel(m));
    const inName = l.node.input[0]!;
    const inDims = learned.value.shapes.get(inName)!;
    const dataArgs = acts ? [
      '--calib', saveNpy(path.join(dir, `isnet-${i}-calib.npy`), acts.calib.get(inName)!),
      '--verify-data', saveNpy(path.join(dir, `isnet-${i}-held.npy`), acts.held.get(inName)!),
      // One layer: anchored fitting has nothing upstream to anchor to.
      '--no-anchor',
    ] : [];
    acts?.calib.delete(inName);
    acts?.held.delete(inName);
    out.push({ label: `ISNet ${isnetLayers[i]} ${l.weightShape.join('x')} @${inDims.slice(2).join('x')}`, file, args: [], data: dataArgs, shapes: {}, judged });
  }
  return out;
}

interface Row {
  target: string; method: string; error?: string; rewritten: number; passes: string;
  /** Params and MACs of the compared layers after / before (a layer left alone counts as before). */
  setParams: number | null; setMacs: number | null; modelParams: number | null; modelMacs: number | null;
  minCosine: number | null; maxRelL2: number | null; factorS: number; toolS: number; budget?: string; file: string; node?: number; web?: number;
  report?: Report;
}

async function optimizeWith(t: Target, method: string, extra: string[], label = method): Promise<Row> {
  const file = path.join(dir, `${path.basename(t.file, '.onnx')}-${label.replace(/[^a-z0-9.-]+/gi, '_')}.onnx`);
  const t0 = performance.now();
  const confine = t.exclude && method !== 'svd' ? ['--exclude', t.exclude] : [];
  const r = await cli(['optimize', t.file, file, ...t.args, ...t.data, ...confine, '--method', method, ...extra, '--no-latency', '--json']);
  const toolS = (performance.now() - t0) / 1000;
  const base: Row = { target: t.label, method: label, file, rewritten: 0, passes: '', setParams: null, setMacs: null, modelParams: null, modelMacs: null, minCosine: null, maxRelL2: null, factorS: 0, toolS };
  if (r.code === 2) return { ...base, error: r.err.trim().split('\n')[0] ?? 'exit 2' };
  const rep = JSON.parse(r.out) as Report;
  const done = rep.layers.filter((l) => !l.skipped);
  const byPass = new Map<string, number>();
  for (const l of done) byPass.set(l.pass ?? '?', (byPass.get(l.pass ?? '?') ?? 0) + 1);
  const inSet = t.set && method !== 'svd' ? rep.layers.filter((l) => t.set!.includes(l.name)) : rep.layers.filter((l) => !l.skipped);
  const sum = (f: (l: (typeof inSet)[number]) => number | undefined): number => inSet.reduce((a, l) => a + (f(l) ?? 0), 0);
  const after = (l: (typeof inSet)[number], a: number | undefined, b: number | undefined): number | undefined => (l.skipped ? b : a);
  const outs = rep.verify?.outputs.filter((o) => o.checked !== false) ?? [];
  return {
    ...base, report: rep, rewritten: done.length, passes: [...byPass].map(([p, n]) => `${p} ${n}`).join(', '),
    setParams: sum((l) => l.paramsBefore) ? sum((l) => after(l, l.paramsAfter, l.paramsBefore)) / sum((l) => l.paramsBefore) : null,
    setMacs: sum((l) => l.macsBefore) ? sum((l) => after(l, l.macsAfter, l.macsBefore)) / sum((l) => l.macsBefore) : null,
    modelParams: rep.output.params / rep.input.params,
    modelMacs: rep.input.macs && rep.output.macs !== undefined ? rep.output.macs / rep.input.macs : null,
    minCosine: outs.length ? Math.min(...outs.map((o) => o.cosine)) : null,
    maxRelL2: outs.length ? Math.max(...outs.map((o) => o.relL2)) : null,
    factorS: rep.timings?.factorization ?? 0,
    ...(rep.budget && { budget: `params target ${rep.budget.target.toPrecision(4)} achieved ${rep.budget.achieved.toPrecision(4)}${rep.budget.met ? '' : ' NOT met'}` }),
  };
}

console.log(`machine: ${machineLine()}; timing ORT-node 1 thread${web ? ', ORT-web wasm 1 thread' : ''}; load before: ${loadLine()}`);
console.log(`budget: rank ratio ${ratio} for every method (auto: Tucker-2's params as an upper --target-params, --all-methods; auto's picks: the method auto's comparison takes per layer at the ratio, at that method's ranks); data: ${data}; methods: ${methods.join(', ')}`);

const f = (x: number | null | undefined, d = 3): string => (x === null || x === undefined ? '-' : x.toFixed(d));
const printRows = (rs: readonly Row[]): void => console.log(table(
  ['target', 'method', 'layers', 'set params', 'set MACs', 'model MACs', 'node ×', 'wasm ×', 'held-out cos', 'held-out rel L2', 'factor s', 'tool s', 'passes / budget / error'],
  rs.map((r) => [r.target, r.method, String(r.rewritten), f(r.setParams), f(r.setMacs), f(r.modelMacs), f(r.node, 2), f(r.web, 2), f(r.minCosine, 4), f(r.maxRelL2, 4), f(r.factorS, 1), f(r.toolS, 0),
    r.error ?? [r.passes, r.budget].filter(Boolean).join('; ')]),
  ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
));

const targets: Target[] = [];
const skipped: string[] = [];
if (models.includes('det')) targets.push(await detTarget());
if (models.includes('isnet')) {
  try { targets.push(...await isnetTargets()); } catch (e) { skipped.push(`ISNet: ${(e as Error).message.split('\n')[0]}`); }
}
for (const s of skipped) console.log(`skipped ${s}`);
const rows: Row[] = [];
for (const t of targets) {
  console.log(`\n${t.label}: error judged on ${t.judged}${t.set ? `; layers ${t.set.join(', ')}` : ''}`);
  const mine: Row[] = [];
  let autoPicks: Report | undefined;
  const done = (row: Row): void => {
    process.stderr.write(`done ${t.label} / ${row.method}${row.error ? `: ${row.error}` : ''} (${row.toolS.toFixed(0)} s, ${row.factorS.toFixed(1)} s factorization)\n`);
    mine.push(row);
  };
  for (const m of methods.filter((x) => x !== 'auto')) done(await optimizeWith(t, m, ['--rank-ratio', ratio], m === 'svd' && t.set ? 'svd (its 1x1 layers)' : m));
  if (methods.includes('auto')) {
    const tucker = mine.find((r) => r.method === 'tucker2' && !r.error && r.rewritten > 0);
    // The whole model's params ratio of the Tucker-2 row: the other layers are excluded, so only the set can spend it.
    const target = tucker?.modelParams?.toFixed(4);
    if (target) done(await optimizeWith(t, 'auto', ['--target-params', target, '--all-methods'], `auto @ params ${target}`));
    else mine.push({ target: t.label, method: 'auto', error: 'needs the tucker2 row (its params are the budget)', rewritten: 0, passes: '', setParams: null, setMacs: null, modelParams: null, modelMacs: null, minCosine: null, maxRelL2: null, factorS: 0, toolS: 0, file: '' });
    // auto at the ratio: Tucker-2's ranks challenged by the other methods at no more params, the
    // winner then shrunk to the smallest rank within the error (fewer params: shown with --auto-own).
    const own = await optimizeWith(t, 'auto', ['--rank-ratio', ratio], 'auto (own ranks)');
    if (autoOwn || own.error) done(own);
    autoPicks = own.report;
  }
  // Several layers: each takes the method whose fit at the ratio had the least error on the
  // calibration data (the layer's dataError; weight error without data), all written at
  // once through a plan (optimize --plan) and verified like the others: the mix of methods
  // at equal params that a comparison at equal params would pick.
  const fitted = mine.filter((r) => r.report && !r.error && !['svd', 'auto'].includes(r.method.split(' ')[0]!));
  // auto at equal params: each layer takes the method auto's comparison picked at the ratio,
  // at that method's own ranks for the ratio (its row's fit), not shrunk: written through a plan.
  if (autoPicks && fitted.length > 0) {
    const ofPass = (pass: string | undefined, name: string): LayerRecord | undefined => {
      for (const r of fitted) {
        const l = r.report!.layers.find((x) => x.name === name && !x.skipped && x.pass === pass);
        if (l) return l;
      }
      return undefined;
    };
    const base = fitted[0]!.report!;
    const picked = base.layers.map((l) => {
      const a = autoPicks!.layers.find((x) => x.name === l.name);
      return a && !a.skipped ? ofPass(a.pass, l.name) ?? l : { ...l, skipped: true, reason: a?.reason ?? 'auto left it' };
    });
    const planFile = path.join(dir, `${path.basename(t.file, '.onnx')}-auto-picks.plan.json`);
    writeFileSync(planFile, JSON.stringify({ ...base, layers: picked }));
    const methodsOf = [...new Set(picked.filter((l) => !l.skipped && (!t.set || t.set.includes(l.name))).map((l) => l.method ?? l.pass))].join('+') || 'none';
    done(await optimizeWith(t, 'auto', ['--plan', planFile], `auto's picks (${methodsOf}) @ ratio`));
  }
  if (t.set && t.set.length > 1 && fitted.length > 1) {
    const best = new Map<string, LayerRecord>();
    const score = (l: LayerRecord): number => l.dataError ?? l.relError ?? Infinity;
    for (const r of fitted) {
      for (const l of r.report!.layers) {
        if (l.skipped || !t.set.includes(l.name)) continue;
        const b = best.get(l.name);
        if (!b || score(l) < score(b)) best.set(l.name, l);
      }
    }
    const base = fitted[0]!.report!;
    const planFile = path.join(dir, `${path.basename(t.file, '.onnx')}-best.plan.json`);
    writeFileSync(planFile, JSON.stringify({ ...base, layers: base.layers.map((l) => best.get(l.name) ?? l) }));
    done(await optimizeWith(t, 'auto', ['--plan', planFile], 'best per layer (calib. error)'));
  }
  const timed = mine.filter((r) => !r.error && r.rewritten > 0);
  const node = await speedups(t, timed.map((r) => r.file), 'node');
  const wasm = web ? await speedups(t, timed.map((r) => r.file), 'web') : [];
  timed.forEach((r, i) => { r.node = node[i]; r.web = wasm[i]; });
  rows.push(...mine);
  // Each target's rows as soon as they are measured (a long run stopped early keeps them).
  printRows(mine);
  console.log(`load: ${loadLine()}`);
}
if (targets.length > 1) { console.log('\nall targets:'); printRows(rows); }
console.log(`load after: ${loadLine()}`);
// The models and activations written (ISNet's: hundreds of MB), unless asked to keep them.
if (flag(argv, 'keep')) console.log(`files kept in ${dir}`); else rmSync(dir, { recursive: true, force: true });
