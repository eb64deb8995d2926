/**
 * `optimize --html` opened in real headless Chromium: a budget run with per-layer latency
 * on the shipped classifier writes the page, which must load with no console or page
 * error and no request of any kind beyond the file itself, draw every chart with data
 * (one spectrum per rewritten layer, error-vs-rank curves, the latency chart), and show a
 * hostile layer name as text. A screenshot is written to a temp folder (its path printed).
 *
 * Needs Debian's chromium at /usr/bin/chromium: skipped without it, unless CI=true.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { chromiumOrSkip, launchChromium } from '../web/chromium.js';
import { renderHtml } from '../../src/report/html.js';
import type { Report } from '../../src/report/report.js';
import { nonProgress, runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

const haveChromium = chromiumOrSkip(import.meta.filename);

interface Opened { page: Page; problems: string[]; requests: string[] }

describe.runIf(haveChromium)('optimize --html in headless Chromium', () => {
  let browser: Browser;
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-html-'));
  const htmlPath = path.join(dir, 'report.html');
  const jsonPath = path.join(dir, 'report.json');
  let report: Report;

  beforeAll(async () => {
    const r = await runCli(
      'optimize', REAL.cls, path.join(dir, 'cls.lr.onnx'), '--shape', 'x:1x3x48x192',
      '--target-params', '0.6', '--layer-latency', '--align', '4', '--min-params', '1000', '--no-latency',
      '--report', jsonPath, '--html', htmlPath,
    );
    // Exit 1 is a failed verification (this budget is aggressive); the files are written either way.
    expect([0, 1], r.err).toContain(r.code);
    expect(nonProgress(r.err).filter((l) => !l.startsWith('onnx-lr: warning:'))).toEqual([]);
    report = JSON.parse(readFileSync(jsonPath, 'utf8')) as Report;
    browser = await launchChromium();
  });
  afterAll(async () => { await browser?.close(); });

  async function open(file: string): Promise<Opened> {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const problems: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (q) => { if (!/^(file|data):/.test(q.url())) requests.push(q.url()); });
    await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
    return { page, problems, requests };
  }

  it('opens with no error and no network, and every chart has data', async () => {
    const rewritten = report.layers.filter((l) => !l.skipped);
    expect(rewritten.length).toBeGreaterThan(0);
    expect(report.sensitivity?.some((s) => s.candidates.length > 1)).toBe(true);
    const { page, problems, requests } = await open(htmlPath);
    expect(problems).toEqual([]);
    expect(requests).toEqual([]);

    // Every <svg> draws at least one mark at real coordinates inside its view box, and is laid out.
    const charts = await page.$$eval('svg.chart', (svgs) => svgs.map((svg) => {
      const [, , w, h] = (svg.getAttribute('viewBox') ?? '').split(' ').map(Number);
      const inside = (x: number, y: number): boolean => Number.isFinite(x) && Number.isFinite(y) && x >= 0 && y >= 0 && x <= w! && y <= h!;
      let marks = 0;
      for (const p of svg.querySelectorAll('path.line')) {
        const nums: number[] = (p.getAttribute('d') ?? '').match(/-?[\d.]+/g)?.map(Number) ?? [];
        if (nums.length >= 4 && nums.every((v, i) => (i % 2 === 0 ? inside(v, 0) : inside(0, v)))) marks++;
      }
      for (const c of svg.querySelectorAll('circle.dot, circle.chosen')) if (inside(Number(c.getAttribute('cx')), Number(c.getAttribute('cy')))) marks++;
      for (const r of svg.querySelectorAll('rect.bar')) if (Number(r.getAttribute('width')) > 0 && inside(Number(r.getAttribute('x')), Number(r.getAttribute('y')))) marks++;
      const box = svg.getBoundingClientRect();
      return { title: svg.getAttribute('aria-label'), marks, laidOut: box.width > 0 && box.height > 0 };
    }));
    expect(charts.length).toBeGreaterThan(rewritten.length);
    for (const c of charts) {
      expect(c.marks, `chart "${c.title}" draws nothing`).toBeGreaterThan(0);
      expect(c.laidOut, `chart "${c.title}" is not laid out`).toBe(true);
    }

    // One spectrum (an SVD pair's matrix) per rewritten layer, each with the chosen rank marked.
    const spectra = await page.$$eval('figure.spectrum', (fs) => fs.map((f) => ({ layer: f.getAttribute('data-layer'), marks: f.querySelectorAll('line.mark').length })));
    expect(spectra.map((s) => s.layer).sort()).toEqual(rewritten.map((l) => l.name).sort());
    expect(spectra.every((s) => s.marks === 1)).toBe(true);
    // The error-vs-rank curves (sensitivity), the per-layer latency and the allocation are drawn.
    expect(await page.locator('figure.error-curve svg').count()).toBeGreaterThan(0);
    expect(await page.locator('figure.latency svg rect.bar').count()).toBeGreaterThan(0);
    expect(await page.locator('figure.allocation svg').count()).toBeGreaterThan(0);
    // The verification table names each output with its worst input.
    const verifyText = await page.locator('h2:has-text("Verification") + p + table').innerText();
    for (const o of report.verify!.outputs) expect(verifyText).toContain(o.name);
    expect(verifyText).toMatch(/#\d+ of \d+/);

    const shot = path.join(dir, 'report.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(readFileSync(shot).subarray(1, 4).toString()).toBe('PNG');
    console.log(`html report screenshot: ${shot}`);
    await page.close();
  });

  it('shows a layer named with <, &, and quotes as text, not markup', async () => {
    const hostile = `conv<script>alert("x")</script>&amp;'"<b>`;
    const first = report.layers.find((l) => !l.skipped)!.name;
    const rename = <T extends { name: string }>(x: T): T => (x.name === first ? { ...x, name: hostile } : x);
    const renamed: Report = { ...report, layers: report.layers.map(rename), sensitivity: report.sensitivity?.map(rename) };
    const file = path.join(dir, 'hostile.html');
    writeFileSync(file, renderHtml({ ...renamed, input: { ...renamed.input, file: `in<i>"'&.onnx` } }));
    const { page, problems, requests } = await open(file);
    expect(problems).toEqual([]);
    expect(requests).toEqual([]);
    expect(await page.locator('script').count()).toBe(0);
    expect(await page.locator('b, i').count()).toBe(0);
    expect(await page.locator('section.layer h3').first().innerText()).toBe(hostile);
    expect(await page.locator('h1').innerText()).toContain(`in<i>"'&.onnx`);
    await page.close();
  });
});
