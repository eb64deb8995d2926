import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { createProgress } from '../../src/cli/progress.js';
import { REAL } from '../helpers/models.js';

describe('progress on stderr', () => {
  it('logs: quiet for the first interval, then one line per interval naming stage and layer', () => {
    let t = 0;
    const lines: string[] = [];
    const p = createProgress((s) => lines.push(s), false, 10_000, () => t);
    p.stage('factorizing');
    p.layer(0, 3, 'conv_a');
    expect(lines).toEqual([]); // a short run prints nothing
    t = 12_000;
    p.layer(1, 3, 'conv_b');
    t = 15_000;
    p.layer(2, 3, 'conv_c'); // within 10 s of the last line: dropped
    t = 23_000;
    p.stage('verifying in ONNX Runtime');
    p.layer(3, 3, '');
    p.end();
    expect(lines).toEqual(['onnx-lr: factorizing: [2/3] conv_b\n', 'onnx-lr: verifying in ONNX Runtime…\n']);
  });

  it('terminal: every update rewrites one line, and end() clears it', () => {
    const out: string[] = [];
    const p = createProgress((s) => out.push(s), true, 10_000, () => 0);
    p.stage('learning shapes');
    p.layer(0, 2, 'x'.repeat(80));
    p.end();
    expect(out).toEqual(['\r\x1b[Klearning shapes…', `\r\x1b[Klearning shapes: [1/2] ${'x'.repeat(60)}`, '\r\x1b[K']);
  });
});

describe('where the CLI sends progress', () => {
  it('a terminal (io.live) gets the live line; the report still goes to out', async () => {
    const live: string[] = [];
    let out = '';
    let err = '';
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-live-'));
    const code = await main(
      ['optimize', REAL.cls, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x192', '--no-verify'],
      { out: (s) => { out += s; }, err: (s) => { err += s; }, live: (s) => { live.push(s); } },
    );
    expect(code).toBe(0);
    expect(live).toContain('\r\x1b[Klearning shapes…');
    expect(live[live.length - 1]).toBe('\r\x1b[K'); // cleared before the report
    expect(out).toMatch(/layers: \d+ rewritten/);
    expect(err).toBe('');
  });
});
