/**
 * npm run bench:anchor [-- --models=rec,rec-logits,det,rec-text,det-text,isnet,…] [-- --arms=anchored,refine,…] [-- --json]
 * Anchored against independent fits at equal ranks (issue 18's target: held-out output
 * error ≤ 0.7× of the independent data-aware fit). Per model, `onnx-lr plan` fixes every
 * layer's pass and ranks from its calibration data; `optimize --plan` then writes that
 * plan twice, fitted anchored (the default with --calib) and with `--no-anchor`, each
 * verified on held-out inputs the fits never saw. The figure is the held-out rel. L2 of
 * the output (ISNet: the mask), anchored over independent.
 * - rec, det: seeded N(0,1) inputs at the bench shape (8 and 4 to calibrate, 4 held out),
 *   at the policies of test/optimize/anchored.test.ts (rec every layer at rank ratio 0.5,
 *   det its 10 heaviest at 0.8). det is judged on its logits (a copy whose output is the
 *   final Sigmoid's input): on inputs without text its probability map is ~1e-8 everywhere
 *   and a relative error of it says nothing. rec-logits is rec judged the same way (the
 *   final Softmax's input), beside rec as shipped.
 * - rec-text, rec-text-logits, det-text: the same models on rendered text
 *   (tools/text-lines.ts; Chromium): rec on 64 one-line crops to calibrate
 *   (--text-calib=N) and 32 held out, det on 16 pages of 8 lines (--text-pages=N) and 8
 *   held out, normalised as PaddleOCR does, det judged on its probability map as shipped.
 *   Noise is not what an OCR model sees: on text, rec's softmax is a confident reading
 *   and det's map marks the lines, so their errors mean misread and missed text.
 * - isnet (never in the default set: about 25 minutes; computed in float32, where its
 *   float16 graph carries gradients for --refine): three photos to calibrate and
 *   three held out (tools/photos.ts), its 44 heaviest convs at rank ratio 0.5.
 *   isnet-more calibrates on those three and N Debian test photos (--more-photos=N,
 *   default 8; apt-get download), held out as isnet.
 * --policy="--rank-ratio 0.8 …" plans every model with these flags instead of its own.
 * --arms=anchored,activation-fit,independent-activation-fit,output-aware,refine,independent-refine
 * picks arms (the independent one always runs); --refine-steps=N
 * (default 30) sets the refine arms' steps.
 * Two more arms, anchored with `--activation-fit` and `--no-anchor --activation-fit`, show
 * what the refit through each Relu/Clip (optimize/flat-refit.ts) adds to the linear
 * anchored and independent fits; a fifth, anchored with `--output-aware`, what weighting
 * the SVD pairs' outputs by the sensitivity of the judged output adds
 * (optimize/output-sensitivity.ts; on by default with --calib, so the other arms and the
 * plan run with --no-output-aware).
 * Two more, `--refine N` on the default fit and on the independent one, what refitting every
 * new factor to the original's outputs by gradients adds (optimize/refine.ts).
 * The tool's time of each arm is printed too (the anchored arm pays the waves).
 * --oracle adds two arms fitted on the held-out inputs themselves (calibration set = test
 * set, same plan): what anchoring gains when its statistics are exactly those it is judged
 * on, a bound on what more calibration data could give at these ranks.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REAL_MODELS, realModelArgs } from '../models/real.js';
import { ensureIsnet, ISNET_IMAGE_ARGS } from './isnet-model.js';
import { ensureMorePhotos, ensurePhotos } from './photos.js';
import { ensureTextImages } from './text-lines.js';
import { main } from '../src/cli/main.js';
import { table } from '../src/report/format.js';
import type { Report } from '../src/report/report.js';
import { logitsModel, randomNpy } from './bench-data.js';
import { intOption } from './bench-util.js';

const argv = process.argv.slice(2);
const json = argv.includes('--json');
const oracle = argv.includes('--oracle');
const models = argv.find((a) => a.startsWith('--models='))?.slice(9).split(',') ?? ['rec', 'rec-logits', 'det'];
const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-bench-anchor-'));
const TOOL = 'bench:anchor';
/** rec-text: rendered lines to calibrate on and to hold out (tools/text-lines.ts, seeds 1 and 2). */
const TEXT_CALIB = intOption(argv, 'text-calib', 64, TOOL);
const TEXT_HELD = 32;
/** det-text: rendered pages to calibrate on (8 held out, seed 4). */
const TEXT_PAGES = intOption(argv, 'text-pages', 16, TOOL);
/** --policy="--rank-ratio 0.8 --heaviest 10": the plan's flags instead of each model's own. */
const policyArg = argv.find((a) => a.startsWith('--policy='))?.slice(9);
/** isnet-more: this many Debian photos (tools/photos.ts) beside the three calibration photos. */
const MORE_PHOTOS = intOption(argv, 'more-photos', 8, TOOL);
/** The plans of the OCR models, on noise and on rendered text alike. */
const OCR_POLICY = { rec: ['--rank-ratio', '0.5', '--min-params', '0'], det: ['--rank-ratio', '0.8', '--heaviest', '10', '--min-params', '0'] };

/** `calib`, `held`: the calibration and held-out data (a folder of photos or a .npy file). */
interface Setup { model: string; policy: string[]; common: string[]; calib: string; held: string }

async function setupOf(name: string): Promise<Setup> {
  if (name === 'rec-text' || name === 'rec-text-logits') {
    const model = name === 'rec-text' ? REAL_MODELS.rec.path : logitsModel(REAL_MODELS.rec.path, path.join(dir, 'rec-softmax-input.onnx'));
    const line = { width: 320, height: 48 };
    return {
      // PaddleOCR's recogniser input: (pixel/255 − 0.5)/0.5.
      model, policy: OCR_POLICY.rec, common: [...realModelArgs('rec', dir), '--mean', '0.5,0.5,0.5', '--std', '0.5,0.5,0.5', '--calib-samples', String(TEXT_CALIB)],
      calib: await ensureTextImages({ seed: 1, count: TEXT_CALIB, ...line }), held: await ensureTextImages({ seed: 2, count: TEXT_HELD, ...line }),
    };
  }
  if (name === 'det-text') {
    // PaddleOCR's detector input: ImageNet's normalisation; pages of 8 lines at the bench shape.
    const page = { width: 320, height: 320, lines: 8 };
    return {
      // On pages of text its probability map means something: judged as shipped.
      model: REAL_MODELS.det.path, policy: OCR_POLICY.det, common: [...realModelArgs('det', dir), '--mean', '0.485,0.456,0.406', '--std', '0.229,0.224,0.225', '--calib-samples', String(TEXT_PAGES)],
      calib: await ensureTextImages({ seed: 3, count: TEXT_PAGES, ...page }), held: await ensureTextImages({ seed: 4, count: 8, ...page }),
    };
  }
  if (name === 'isnet' || name === 'isnet-more') {
    const photos = name === 'isnet' ? ensurePhotos() : ensureMorePhotos(MORE_PHOTOS);
    return {
      model: ensureIsnet(), policy: ['--rank-ratio', '0.5', '--heaviest', '44'], common: [...ISNET_IMAGE_ARGS, '--outputs', 'output', '--compute', 'float32'],
      calib: photos.calib, held: photos.held,
    };
  }
  if (name === 'rec-logits') {
    const rec = await setupOf('rec');
    return { ...rec, model: logitsModel(rec.model, path.join(dir, 'rec-softmax-input.onnx')) };
  }
  if (name !== 'rec' && name !== 'det') throw new Error(`--models: ${name} is not one of rec, rec-logits, rec-text, rec-text-logits, det, det-text, isnet, isnet-more`);
  const shape = REAL_MODELS[name].shapes[0]!;
  const dims = shape.split(':')[1]!.split('x').map(Number);
  return {
    model: name === 'det' ? logitsModel(REAL_MODELS.det.path, path.join(dir, 'det-logits.onnx')) : REAL_MODELS[name].path, policy: OCR_POLICY[name], common: realModelArgs(name, dir),
    calib: randomNpy(dir, `${name}-calib.npy`, [name === 'rec' ? 8 : 4, ...dims.slice(1)], 5),
    held: randomNpy(dir, `${name}-held.npy`, [4, ...dims.slice(1)], 77),
  };
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string; s: number }> {
  let out = '';
  let err = '';
  const t0 = performance.now();
  const code = await main(args, { out: (t) => { out += t; }, err: (t) => { err += t; } });
  return { code, out, err, s: (performance.now() - t0) / 1000 };
}

const steps = argv.find((a) => a.startsWith('--refine-steps='))?.slice(15) ?? '30';
/**
 * Each arm's flags. Output weights are on by default with --calib: the arms that are not
 * about them turn them off; the refine arms add --refine to the default fit (anchored,
 * output weights) and to the independent one.
 */
const ARMS: Record<string, { label: string; flags: string[] }> = {
  independent: { label: 'independent', flags: ['--no-anchor', '--no-output-aware'] },
  anchored: { label: 'anchored', flags: ['--no-output-aware'] },
  'activation-fit': { label: '--activation-fit', flags: ['--activation-fit', '--no-output-aware'] },
  'independent-activation-fit': { label: '--no-anchor --activation-fit', flags: ['--no-anchor', '--activation-fit', '--no-output-aware'] },
  'output-aware': { label: '--output-aware', flags: ['--output-aware'] },
  refine: { label: `--refine ${steps}`, flags: ['--refine', steps] },
  'independent-refine': { label: `--no-anchor --refine ${steps}`, flags: ['--no-anchor', '--no-output-aware', '--refine', steps] },
};
const picked = argv.find((a) => a.startsWith('--arms='))?.slice(7).split(',');
const unknown = picked?.filter((p) => !Object.hasOwn(ARMS, p)) ?? [];
if (unknown.length > 0) throw new Error(`--arms: ${unknown.join(', ')} is not one of ${Object.keys(ARMS).join(', ')}`);
const armNames = Object.keys(ARMS).filter((a) => a === 'independent' || !picked || picked.includes(a));

interface Arm { rel: number; ratio: number; s: number }
interface Row {
  model: string; layers: number; arms: Record<string, Arm>; notes: string[];
  /** --oracle: both fits on the held-out inputs themselves. */
  oracle?: { independent: number; anchored: number; ratio: number };
}
const rows: Row[] = [];
for (const name of models) {
  const st = await setupOf(name);
  if (policyArg !== undefined) st.policy = policyArg.split(' ').filter(Boolean);
  const planFile = path.join(dir, `${name}.plan.json`);
  // Passes and ranks are decided before any anchored fit: the plan needs no anchored waves.
  const p = await cli(['plan', st.model, ...st.common, ...st.policy, '--calib', st.calib, '--no-anchor', '--no-output-aware']);
  if (p.code !== 0) throw new Error(`${name}: plan failed: ${p.err}`);
  writeFileSync(planFile, p.out);
  const arm = async (label: string, extra: string[], calib = st.calib): Promise<{ rel: number; s: number; report: Report }> => {
    const r = await cli(['optimize', st.model, path.join(dir, `${name}.onnx`), ...st.common, '--calib', calib, '--verify-data', st.held, '--plan', planFile, '--json', '--no-latency', ...extra]);
    if (r.code === 2) throw new Error(`${name}: optimize failed: ${r.err}`);
    const report = JSON.parse(r.out) as Report;
    const outs = report.verify?.outputs.filter((o) => o.checked !== false) ?? [];
    if (outs.length === 0) throw new Error(`${name}: no verified output`);
    const rel = Math.max(...outs.map((o) => o.relL2));
    if (!json) process.stderr.write(`${name} ${label}${calib === st.calib ? '' : ' fitted on held out'}: rel. L2 ${rel.toPrecision(4)} in ${r.s.toFixed(0)} s\n`);
    return { rel, s: r.s, report };
  };
  const arms: Record<string, Arm> = {};
  const notes: string[] = [];
  let layers = 0;
  for (const a of armNames) {
    const r = await arm(ARMS[a]!.label, ARMS[a]!.flags);
    arms[a] = { rel: r.rel, ratio: r.rel / (arms.independent?.rel ?? r.rel), s: r.s };
    layers = r.report.layers.filter((l) => !l.skipped).length;
    notes.push(...r.report.notes.filter((n) => /^(anchored fitting|fits through|output weights|--refine)/.test(n)).map((n) => `${ARMS[a]!.label}: ${n}`));
  }
  let fitOnHeld: Row['oracle'];
  if (oracle) {
    const [i, a] = [await arm('independent', ARMS.independent!.flags, st.held), await arm('anchored', ARMS.anchored!.flags, st.held)];
    fitOnHeld = { independent: i.rel, anchored: a.rel, ratio: a.rel / i.rel };
  }
  rows.push({ model: name, layers, arms, notes, oracle: fitOnHeld });
  if (json) process.stdout.write(`${JSON.stringify(rows[rows.length - 1])}\n`);
  else process.stderr.write(`done ${name} (${Object.values(arms).reduce((t, a) => t + a.s, 0).toFixed(0)} s)\n`);
}
if (!json) {
  process.stdout.write('Held-out output rel. L2 at equal ranks (one plan), each fit against the independent one (target ratio ≤ 0.7); tool seconds\n\n');
  const oracleCols = oracle ? ['fitted on held out: indep', 'anchored', 'ratio'] : [];
  process.stdout.write(table(['model', 'layers', ...armNames.map((a) => ARMS[a]!.label), ...oracleCols], rows.map((r) => [
    r.model, String(r.layers),
    ...armNames.map((a) => { const x = r.arms[a]!; return a === 'independent' ? `${x.rel.toPrecision(3)} (${x.s.toFixed(0)} s)` : `${x.rel.toPrecision(3)}, ${x.ratio.toFixed(3)}× (${x.s.toFixed(0)} s)`; }),
    ...r.oracle ? [r.oracle.independent.toPrecision(3), r.oracle.anchored.toPrecision(3), `${r.oracle.ratio.toFixed(3)}×`] : [],
  ])) + '\n\n');
  for (const r of rows) for (const n of r.notes) process.stdout.write(`${r.model}: ${n}\n`);
}
