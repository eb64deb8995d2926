import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { createProgress, formatDuration, formatEstimate, isProgressLine } from '../../src/cli/progress.js';
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
    // One layer done in 12 s, two to go: ~24 s left.
    expect(lines).toEqual(['onnx-lr: factorizing: [2/3] conv_b — 12s elapsed, ~24s left\n', 'onnx-lr: verifying in ONNX Runtime…\n']);
  });

  it('the estimate is from the current stage\'s layer rate; elapsed counts from the start of the run', () => {
    let t = 0;
    const lines: string[] = [];
    const p = createProgress((s) => lines.push(s), true, 10_000, () => t);
    p.stage('measuring layer sensitivity');
    t = 5_000;
    p.layer(0, 41, 'a'); // the stage's layers start here: nothing done yet, no estimate
    t = 5_000 + 11 * 10_000;
    p.layer(11, 41, 'b'); // 11 layers in 110 s: 10 s each, 30 to go
    t = 190_000;
    p.stage('factorizing');
    t = 200_000;
    p.layer(0, 4, 'c');
    t = 203_000;
    p.layer(1, 4, 'd'); // the slow stage before does not count: 3 s a layer, 3 to go
    t = 4 * 3600_000;
    p.layer(2, 4, 'e'); // a stalled layer: the estimate grows with it
    expect(lines.map((l) => l.replace('\r\x1b[K', ''))).toEqual([
      'measuring layer sensitivity…',
      'measuring layer sensitivity: [1/41] a — 5s elapsed',
      'measuring layer sensitivity: [12/41] b — 1m55s elapsed, ~5m left',
      'factorizing…',
      'factorizing: [1/4] c — 3m20s elapsed',
      'factorizing: [2/4] d — 3m23s elapsed, ~9s left',
      'factorizing: [3/4] e — 4h00m elapsed, ~3h57m left',
    ]);
    for (const l of lines.slice(1)) expect(isProgressLine(`onnx-lr: ${l.replace('\r\x1b[K', '')}`), l).toBe(true);
  });

  it('durations and estimates read as people write them', () => {
    expect([0, 999, 42_000, 60_000, 190_400, 3599_000, 3600_000, 3 * 3600_000 + 5 * 60_000].map(formatDuration))
      .toEqual(['0s', '1s', '42s', '1m00s', '3m10s', '59m59s', '1h00m', '3h05m']);
    expect([100, 40_000, 61_000, 419_000, 3600_000, 7_300_000].map(formatEstimate)).toEqual(['~1s', '~40s', '~2m', '~7m', '~1h00m', '~2h02m']);
  });

  it('terminal: every update rewrites one line, and end() clears it', () => {
    const out: string[] = [];
    const p = createProgress((s) => out.push(s), true, 10_000, () => 0);
    p.stage('learning shapes');
    p.layer(0, 2, 'x'.repeat(80));
    p.end();
    expect(out).toEqual(['\r\x1b[Klearning shapes…', `\r\x1b[Klearning shapes: [1/2] ${'x'.repeat(60)} — 0s elapsed`, '\r\x1b[K']);
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
