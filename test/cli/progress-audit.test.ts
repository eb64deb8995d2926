/** Progress lines are recognised as such, so tests can check stderr without depending on how long a run took. */
import { describe, expect, it } from 'vitest';
import { createProgress, isProgressLine } from '../../src/cli/progress.js';
import { nonProgress } from '../helpers/cli.js';

describe('isProgressLine', () => {
  it('recognises every line a log progress writes, and no warning or error line', () => {
    let t = 0;
    const lines: string[] = [];
    const p = createProgress((s) => lines.push(s.replace(/\n$/, '')), false, 10, () => t);
    for (const stage of ['learning shapes', 'stage 2/3: measuring layer sensitivity', 'verifying in ONNX Runtime']) {
      t += 20;
      p.stage(stage);
      t += 20;
      p.layer(0, 2, 'p2o.Conv.12');
    }
    t += 20;
    p.stage('');
    t += 20;
    p.layer(4, 9, 'a layer: with a colon [1/2]');
    expect(lines).toHaveLength(8);
    for (const l of lines) expect(isProgressLine(l), l).toBe(true);
    for (const l of [
      'onnx-lr: warning: 2 layer(s) skipped for NaN/Inf in their weights: a, b',
      'onnx-lr: --verify-data: /tmp/x.npy holds NaN',
      'onnx-lr: internal error: x is undefined',
      'onnx-lr: verifying in ONNX Runtime',
      'verifying in ONNX Runtime…',
      'onnx-lr: [1/2]',
      '',
    ]) expect(isProgressLine(l), l).toBe(false);
  });

  it('nonProgress keeps every other stderr line, blank ones included', () => {
    expect(nonProgress('')).toEqual([]);
    expect(nonProgress('onnx-lr: decomposing layers: [3/40] conv\nonnx-lr: writing…\n')).toEqual([]);
    expect(nonProgress('onnx-lr: writing…\nonnx-lr: warning: x\n\n')).toEqual(['onnx-lr: warning: x', '']);
  });
});
