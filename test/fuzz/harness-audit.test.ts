/**
 * The fuzz harness judges a hang by CPU time (or, for a command that blocks, by a wall
 * limit far above any load), and does not count progress lines as stderr noise.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CPU_LIMIT_MS, FuzzWorker, judge, WALL_LIMIT_MS } from './harness.js';
import { REAL } from '../helpers/models.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-harness-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
// An optimize that needs seconds of CPU (far past the 250 ms between CPU readings), and a short one.
const work = ['optimize', REAL.rec, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x320', '--rank-ratio', '0.5', '--min-params', '0', '--no-latency'];
const quick = ['optimize', REAL.cls, path.join(dir, 'q.onnx'), '--shape', 'x:1x3x48x192', '--rank-ratio', '0.5', '--no-latency'];

describe('fuzz harness limits', () => {
  it('a command that computes past its CPU limit is killed as a hang; the worker restarts for the next one', async () => {
    const w = new FuzzWorker();
    try {
      const r = await w.run(work, 50);
      expect(r.timeout).toBe('cpu');
      expect(judge('optimize', r, [])).toEqual([`over ${CPU_LIMIT_MS.optimize} ms of CPU time without an answer (hang)`]);
      const again = await w.run(quick, CPU_LIMIT_MS.optimize);
      expect(again.timeout).toBeUndefined();
      expect([0, 1]).toContain(again.code);
      expect(w.restarts).toBe(1);
    } finally {
      w.stop();
    }
  });

  it('the wall limit still ends a command that does not answer', async () => {
    const w = new FuzzWorker();
    try {
      const r = await w.run(work, CPU_LIMIT_MS.optimize, {}, 200);
      expect(r.timeout).toBe('wall');
      expect(judge('optimize', r, [])).toEqual([`no answer within ${WALL_LIMIT_MS} ms, using little CPU (blocked)`]);
    } finally {
      w.stop();
    }
  });

  it('progress lines on stderr are not a finding; any other line is', () => {
    const ok = { id: 1, code: 0, out: 'x', ms: 1, peakMb: 10, outExists: true, outLoad: '', inOrt: '', outOrt: '' };
    expect(judge('optimize', { ...ok, err: 'onnx-lr: decomposing layers: [3/40] conv\nonnx-lr: verifying in ONNX Runtime…\n' }, [])).toEqual([]);
    expect(judge('optimize', { ...ok, err: 'onnx-lr: writing…\nonnx-lr: warning: x\n' }, [])).toEqual(['stderr on success: onnx-lr: warning: x']);
    expect(judge('optimize', { ...ok, err: '\n' }, [])).toEqual(['stderr on success: ']);
  });
});
