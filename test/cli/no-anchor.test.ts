import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Report } from '../../src/report/report.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';
import { calibFile } from '../helpers/calib.js';
import { ModelBuilder } from '../../models/builder.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { createRng } from '../../src/util/rng.js';

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

describe('--activation-fit refits anchored convs read by a Relu through it', () => {
  it('a 3x3 conv + Relu at rank ratio 0.5: same decisions, the refit only with the flag, and the notes say so', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-activation-fit-cli-'));
    const rng = createRng(9);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 16, 16, 16]);
    const w = Float32Array.from({ length: 32 * 16 * 9 }, () => rng.normal() / 12);
    b.output(b.node('Relu', [b.node('Conv', [x, b.init('w', [32, 16, 3, 3], w), b.init('b', [32], new Float32Array(32).fill(-0.5))], { pads: [1, 1, 1, 1] }, { name: 'conv' })]));
    const model = path.join(dir, 'm.onnx');
    writeFileSync(model, encodeModel(b.build()));
    const calib = calibFile(dir, [6, 16, 16, 16], 4);
    const run = async (...extra: string[]): Promise<Report> => {
      const r = await runCli('optimize', model, path.join(dir, 'o.onnx'), '--method', 'tucker2', '--rank-ratio', '0.5', '--min-params', '0',
        '--calib', calib, '--no-verify', '--no-latency', '--json', ...extra);
      expect(r.code, r.err).toBe(0);
      return JSON.parse(r.out) as Report;
    };
    const through = await run('--activation-fit');
    const linear = await run();
    const decisions = (r: Report): string[] => r.layers.map((l) => `${l.name}:${l.pass ?? '-'}:${l.skipped ? '-' : l.ranks!.join(',')}`);
    expect(decisions(through)).toEqual(['conv:conv-tucker2:' + linear.layers[0]!.ranks!.join(',')]);
    expect(decisions(through)).toEqual(decisions(linear));
    expect(through.notes).toContain('anchored fitting: 1 of 1 conv(s) read by a Relu/Clip alone fitted through it (lower error after the activation on held-back patches; the others keep the linear fit)');
    expect(through.layers[0]!.note).toMatch(/fitted through the Relu \(post-Relu error on \d+ held-back patches [\d.e+-]+ → [\d.e+-]+\)/);
    expect(linear.notes.join('\n')).not.toMatch(/Relu/);
    expect(linear.layers[0]!.note ?? '').not.toMatch(/Relu/);
    expect(through.layers[0]!.dataError).not.toEqual(linear.layers[0]!.dataError);
    // Without anchoring: the independent fit, refitted through the Relu.
    const plain = await run('--no-anchor');
    const indepThrough = await run('--no-anchor', '--activation-fit');
    expect(decisions(indepThrough)).toEqual(decisions(linear));
    expect(indepThrough.notes.filter((n) => /^(anchored fitting|fits through)/.test(n))).toEqual([
      'fits through the activation: 1 of 1 conv(s) read by a Relu/Clip alone refitted through it (lower error after the activation on held-back patches), every other layer keeps its independent fit (patch samples of the original model on 6 calibration feed(s))',
    ]);
    expect(indepThrough.layers[0]!.note).toMatch(/fitted through the Relu/);
    expect(plain.notes.join('\n')).not.toMatch(/Relu|anchored fitting/);
    expect(indepThrough.layers[0]!.dataError).not.toEqual(plain.layers[0]!.dataError);
    // Without calibration data there is nothing to refit on, and the report says so.
    const r = await runCli('optimize', model, path.join(dir, 'o.onnx'), '--method', 'tucker2', '--rank-ratio', '0.5', '--min-params', '0', '--no-verify', '--no-latency', '--json', '--activation-fit');
    expect(r.code, r.err).toBe(0);
    expect((JSON.parse(r.out) as Report).notes).toContain('--activation-fit: no calibration statistics (it needs --calib, without --no-data-aware), so every fit is the linear one');
  });
});
