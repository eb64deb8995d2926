/**
 * npm run bench:anchor [-- --models=rec,rec-logits,det,isnet] [-- --json]
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
 * - isnet (never in the default set: about 25 minutes): three photos to calibrate and
 *   three held out (tools/photos.ts), its 44 heaviest convs at rank ratio 0.5.
 * Two more arms, anchored with `--activation-fit` and `--no-anchor --activation-fit`, show
 * what the refit through each Relu/Clip (optimize/flat-refit.ts) adds to the linear
 * anchored and independent fits; a fifth, anchored with `--output-aware`, what weighting
 * the SVD pairs' outputs by the sensitivity of the judged output adds
 * (optimize/output-sensitivity.ts; on by default with --calib, so the other arms and the
 * plan run with --no-output-aware).
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
import { ensurePhotos } from './photos.js';
import { main } from '../src/cli/main.js';
import { table } from '../src/report/format.js';
import type { Report } from '../src/report/report.js';
import { logitsModel, randomNpy } from './bench-data.js';

const argv = process.argv.slice(2);
const json = argv.includes('--json');
const oracle = argv.includes('--oracle');
const models = argv.find((a) => a.startsWith('--models='))?.slice(9).split(',') ?? ['rec', 'rec-logits', 'det'];
const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-bench-anchor-'));


/** `calib`, `held`: the calibration and held-out data (a folder of photos or a .npy file). */
interface Setup { model: string; policy: string[]; common: string[]; calib: string; held: string }

function setupOf(name: string): Setup {
  if (name === 'isnet') {
    const photos = ensurePhotos();
    return {
      model: ensureIsnet(), policy: ['--rank-ratio', '0.5', '--heaviest', '44'], common: [...ISNET_IMAGE_ARGS, '--outputs', 'output'],
      calib: photos.calib, held: photos.held,
    };
  }
  if (name === 'rec-logits') {
    const rec = setupOf('rec');
    return { ...rec, model: logitsModel(rec.model, path.join(dir, 'rec-softmax-input.onnx')) };
  }
  if (name !== 'rec' && name !== 'det') throw new Error(`--models: ${name} is not one of rec, rec-logits, det, isnet`);
  const shape = REAL_MODELS[name].shapes[0]!;
  const dims = shape.split(':')[1]!.split('x').map(Number);
  const policy = name === 'rec' ? ['--rank-ratio', '0.5', '--min-params', '0'] : ['--rank-ratio', '0.8', '--heaviest', '10', '--min-params', '0'];
  return {
    model: name === 'det' ? logitsModel(REAL_MODELS.det.path, path.join(dir, 'det-logits.onnx')) : REAL_MODELS[name].path, policy, common: realModelArgs(name, dir),
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

interface Row {
  model: string; layers: number; independent: number; anchored: number; ratio: number; independent_s: number; anchored_s: number; notes: string[];
  /** Anchored with --activation-fit: refitted through each Relu/Clip. */
  through: number; through_s: number;
  /** --no-anchor --activation-fit: the independent fits refitted through each Relu/Clip. */
  indepThrough: number; indepThrough_s: number;
  /** Anchored with --output-aware: SVD pairs weighted by the measured output sensitivity. */
  aware: number; aware_s: number;
  /** --oracle: both fits on the held-out inputs themselves. */
  oracle?: { independent: number; anchored: number; ratio: number };
}
const rows: Row[] = [];
for (const name of models) {
  const st = setupOf(name);
  const planFile = path.join(dir, `${name}.plan.json`);
  // Passes and ranks are decided before any anchored fit: the plan needs no anchored waves.
  const p = await cli(['plan', st.model, ...st.common, ...st.policy, '--calib', st.calib, '--no-anchor', '--no-output-aware']);
  if (p.code !== 0) throw new Error(`${name}: plan failed: ${p.err}`);
  writeFileSync(planFile, p.out);
  const arm = async (extra: string[], calib = st.calib): Promise<{ rel: number; s: number; report: Report }> => {
    const r = await cli(['optimize', st.model, path.join(dir, `${name}.onnx`), ...st.common, '--calib', calib, '--verify-data', st.held, '--plan', planFile, '--json', '--no-latency', ...extra]);
    if (r.code === 2) throw new Error(`${name}: optimize failed: ${r.err}`);
    const report = JSON.parse(r.out) as Report;
    const outs = report.verify?.outputs.filter((o) => o.checked !== false) ?? [];
    if (outs.length === 0) throw new Error(`${name}: no verified output`);
    const rel = Math.max(...outs.map((o) => o.relL2));
    if (!json) process.stderr.write(`${name} ${extra.filter((e) => e !== '--no-output-aware').join(' ') || '(anchored)'}${calib === st.calib ? '' : ' fitted on held out'}: rel. L2 ${rel.toPrecision(4)} in ${r.s.toFixed(0)} s\n`);
    return { rel, s: r.s, report };
  };
  // Output weights are on by default with --calib: the other arms turn them off.
  const indep = await arm(['--no-anchor', '--no-output-aware']);
  const anch = await arm(['--no-output-aware']);
  const thr = await arm(['--activation-fit', '--no-output-aware']);
  const ithr = await arm(['--no-anchor', '--activation-fit', '--no-output-aware']);
  const aw = await arm(['--output-aware']);
  let fitOnHeld: Row['oracle'];
  if (oracle) {
    const [i, a] = [await arm(['--no-anchor', '--no-output-aware'], st.held), await arm(['--no-output-aware'], st.held)];
    fitOnHeld = { independent: i.rel, anchored: a.rel, ratio: a.rel / i.rel };
  }
  rows.push({
    model: name, layers: anch.report.layers.filter((l) => !l.skipped).length,
    independent: indep.rel, anchored: anch.rel, ratio: anch.rel / indep.rel, independent_s: indep.s, anchored_s: anch.s, through: thr.rel, through_s: thr.s, indepThrough: ithr.rel, indepThrough_s: ithr.s,
    aware: aw.rel, aware_s: aw.s,
    notes: [...thr.report.notes, ...ithr.report.notes, ...aw.report.notes].filter((n) => /^(anchored fitting|fits through|output weights)/.test(n)), oracle: fitOnHeld,
  });
  const row = rows[rows.length - 1]!;
  if (json) process.stdout.write(`${JSON.stringify(row)}\n`);
  else process.stderr.write(`done ${name} (${(indep.s + anch.s + thr.s + ithr.s + aw.s).toFixed(0)} s)\n`);
}
if (!json) {
  process.stdout.write('Held-out output rel. L2 at equal ranks (one plan), anchored vs independent fit (target ratio ≤ 0.7)\n\n');
  const oracleCols = oracle ? ['fitted on held out: indep', 'anchored', 'ratio'] : [];
  process.stdout.write(table(['model', 'layers', 'independent', 'anchored', 'ratio', '--activation-fit', '--no-anchor --activation-fit', '--output-aware', 'tool s indep / anch / act / indep act / aware', ...oracleCols], rows.map((r) => [
    r.model, String(r.layers), r.independent.toPrecision(3), r.anchored.toPrecision(3), `${r.ratio.toFixed(3)}×`, `${r.through.toPrecision(3)} (${(r.through / r.independent).toFixed(3)}×)`,
    `${r.indepThrough.toPrecision(3)} (${(r.indepThrough / r.independent).toFixed(3)}×)`,
    `${r.aware.toPrecision(3)} (${(r.aware / r.independent).toFixed(3)}×)`,
    `${r.independent_s.toFixed(0)} / ${r.anchored_s.toFixed(0)} / ${r.through_s.toFixed(0)} / ${r.indepThrough_s.toFixed(0)} / ${r.aware_s.toFixed(0)}`,
    ...r.oracle ? [r.oracle.independent.toPrecision(3), r.oracle.anchored.toPrecision(3), `${r.oracle.ratio.toFixed(3)}×`] : [],
  ])) + '\n\n');
  for (const r of rows) for (const n of r.notes) process.stdout.write(`${r.model}: ${n}\n`);
}
