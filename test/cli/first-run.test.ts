/** What a new user meets first: mistakes caught before any work, messages without placeholders or leaked hints. */
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { CLS } from '../verify/models.js';

const lines = (s: string): string[] => s.replace(/\n$/, '').split('\n');

describe('first run', () => {
  it('a missing folder for OUT or --report is one line and exit 2 before any work (IN is not even read)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-first-'));
    const out = path.join(dir, 'no', 'such', 'out.onnx');
    // IN does not exist either: had the run started, that would be the error.
    const r = await runCli('optimize', path.join(dir, 'missing.onnx'), out, '--target-params', '0.5');
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(lines(r.err)).toEqual([`onnx-lr: cannot write OUT ${out}: no such folder ${path.dirname(out)}`]);

    const report = path.join(dir, 'gone', 'r.json');
    const r2 = await runCli('optimize', CLS, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x192', '--target-params', '0.5', '--report', report);
    expect(r2.code).toBe(2);
    expect(lines(r2.err)).toEqual([`onnx-lr: cannot write --report ${report}: no such folder ${path.dirname(report)}`]);
    // Nothing was written: not OUT, not a temp file.
    expect(readdirSync(dir)).toEqual([]);
    expect(existsSync(path.join(dir, 'o.onnx'))).toBe(false);
  });

  it('an unknown option is one clean line naming it, without node\'s hint', async () => {
    const r = await runCli('optimize', 'a.onnx', 'b.onnx', '--foo');
    expect(r.code).toBe(2);
    expect(lines(r.err)).toEqual(['onnx-lr: unknown option --foo (see onnx-lr optimize --help)']);
    const i = await runCli('inspect', 'a.onnx', '--energy');
    expect(lines(i.err)).toEqual(['onnx-lr: unknown option --energy (see onnx-lr inspect --help)']);
    const v = await runCli('optimize', 'a.onnx', 'b.onnx', '--energy');
    expect(lines(v.err)).toEqual(['onnx-lr: --energy needs a value (see onnx-lr optimize --help)']);
  });

  it('the summary of a real run prints its numbers, not placeholder letters, and a run that gains little says what to try', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-first-'));
    const r = await runCli('optimize', CLS, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x192', '--no-latency');
    expect(r.code, r.err).toBe(0);
    const skipped = lines(r.out).find((l) => l.startsWith('skipped: '))!;
    expect(skipped).toMatch(/\b43x fewer params than --min-params 4096\b/);
    expect(skipped).not.toMatch(/\bN\b/);
    const note = lines(r.out).filter((l) => l.startsWith('note: this run saved'));
    expect(note).toEqual(['note: this run saved 0.0% of the params: the per-layer default keeps 99.9% of each weight\'s energy; try a budget with calibration data, e.g. --target-latency 0.8 --calib DIR (or --max-error cosine:0.995 --calib DIR)']);
  });
});
