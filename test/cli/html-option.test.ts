/** `optimize --html FILE`: checked before any work like --report, never over IN or OUT, and honest when IN is gone. */
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { nonProgress, runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'onnx-lr-html-opt-'));
const quick = ['--shape', 'x:1x3x48x192', '--no-verify', '--no-latency', '--min-params', '1000', '--save', 'params', '--rank-ratio', '0.5'];

describe('optimize --html', () => {
  it('a missing folder is refused before any work, naming --html', async () => {
    const dir = tmp();
    const out = path.join(dir, 'o.onnx');
    const r = await runCli('optimize', REAL.cls, out, '--html', path.join(dir, 'nope', 'r.html'));
    expect(r.code).toBe(2);
    expect(nonProgress(r.err)).toEqual([`onnx-lr: cannot write --html ${path.join(dir, 'nope', 'r.html')}: no such folder ${path.join(dir, 'nope')}`]);
    expect(existsSync(out)).toBe(false);
  });

  it('may not be OUT or IN', async () => {
    const dir = tmp();
    const out = path.join(dir, 'o.onnx');
    const same = await runCli('optimize', REAL.cls, out, '--html', out, ...quick);
    expect(same.code).toBe(2);
    expect(same.err).toMatch(/--html .*o\.onnx is the same file as OUT/);
    const onIn = await runCli('optimize', REAL.cls, out, '--html', REAL.cls, ...quick);
    expect(onIn.code).toBe(2);
    expect(onIn.err).toMatch(/--html .* is the input: refusing to overwrite it/);
    expect(existsSync(out)).toBe(false);
  });

  it('writes the page beside the printed table; with OUT over IN (--force) it says the spectra are gone', async () => {
    const dir = tmp();
    const model = path.join(dir, 'm.onnx');
    copyFileSync(REAL.cls, model);
    const html = path.join(dir, 'r.html');
    const r = await runCli('optimize', model, model, '--force', '--html', html, ...quick);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/layers: [1-9]\d* rewritten/);
    const page = readFileSync(html, 'utf8');
    expect(page).toMatch(/^<!DOCTYPE html>/);
    expect(page).toContain('spectra: not computed: OUT replaced IN (--force)');
    expect(page).not.toContain('figure class="spectrum"');
  });
});
