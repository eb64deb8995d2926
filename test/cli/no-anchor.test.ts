import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Report } from '../../src/report/report.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';
import { calibFile } from '../helpers/calib.js';

describe('--calib fits anchored unless --no-anchor', () => {
  it('cls at rank ratio 0.5: same decisions, anchored only by default', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-anchor-cli-'));
    const dims = [4, 3, 48, 192];
    const calib = calibFile(dir, dims, 3);
    const run = async (...extra: string[]): Promise<Report> => {
      const r = await runCli('optimize', REAL.cls, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x192', '--rank-ratio', '0.5',
        '--calib', calib, '--no-verify', '--json', ...extra);
      expect(r.code, r.err).toBe(0);
      return JSON.parse(r.out) as Report;
    };
    const anchored = await run();
    const independent = await run('--no-anchor');
    expect(anchored.notes.some((n) => /^anchored fitting: \d+ layer\(s\)/.test(n))).toBe(true);
    expect(independent.notes.some((n) => /anchored/.test(n))).toBe(false);
    const decisions = (r: Report): string[] => r.layers.map((l) => `${l.name}:${l.pass ?? '-'}:${l.skipped ? '-' : l.ranks!.join(',')}`);
    expect(decisions(anchored)).toEqual(decisions(independent));
    // The fits differ: anchored layers report errors against the compressed model's inputs.
    expect(anchored.layers.map((l) => l.dataError)).not.toEqual(independent.layers.map((l) => l.dataError));
  });
});
