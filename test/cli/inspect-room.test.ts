import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { InspectResult } from '../../src/cli/inspect.js';
import { renderReport, type Report } from '../../src/report/report.js';
import { runCli } from '../helpers/cli.js';
import { REAL, REAL_SHAPES } from '../helpers/models.js';

const shapeArgs = REAL_SHAPES.det.flatMap((s) => ['--shape', s]);

describe('inspect: where the time goes', () => {
  it('splits measured time by layer kind and bounds the speed-up by the rewritable share', async () => {
    const r = await runCli('inspect', REAL.det, ...shapeArgs, '--json');
    expect(r.code).toBe(0);
    const res = JSON.parse(r.out) as InspectResult;
    const room = res.room;
    expect(room.basis).toBe('time');
    expect(room.kinds.reduce((a, k) => a + k.layers, 0)).toBe(res.layers.length);
    // det has depthwise convs and activations: the rewritable layers hold part of the time only.
    const rewritableUs = room.kinds.filter((k) => ['dense kxk conv', '1x1 conv', 'Gemm/MatMul'].includes(k.kind)).reduce((a, k) => a + k.us!, 0);
    expect(room.rewritableShare).toBeCloseTo(rewritableUs / room.totalUs!, 9);
    expect(room.rewritableShare).toBeGreaterThan(0.05);
    expect(room.rewritableShare).toBeLessThan(0.95);
    expect(room.bound).toBeCloseTo(1 / (1 - room.rewritableShare), 9);
    expect(room.kinds.find((k) => k.kind === 'depthwise/grouped conv')!.us).toBeGreaterThan(0);

    // The text states the share and the bound of its own (separately timed) run, consistently.
    const text = await runCli('inspect', REAL.det, ...shapeArgs);
    expect(text.out).toContain('where the time goes');
    const m = /: ([0-9.]+)% of the time, so no rewrite can make this model more than ([0-9.]+)x faster/.exec(text.out);
    expect(m).not.toBeNull();
    expect(Number(m![2])).toBeCloseTo(1 / (1 - Number(m![1]) / 100), 1);
  });

  it('--no-profile falls back to MAC shares and says so', async () => {
    const r = await runCli('inspect', REAL.det, ...shapeArgs, '--no-profile');
    expect(r.code).toBe(0);
    expect(r.out).toContain('where the MACs go (not timed: --no-profile)');
    expect(r.out).toContain('an overestimate: MACs are not time');
  });
});

describe('optimize: the room line', () => {
  it('reports the original\'s rewritable time share and bound when it times the models', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-room-'));
    const r = await runCli('optimize', REAL.wake, path.join(dir, 'o.onnx'), '--energy', '0.995', '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.room!.basis).toBe('time');
    expect(rep.room!.kinds.map((k) => k.kind)).toEqual(['Gemm/MatMul']);
    expect(rep.room!.bound).toBeCloseTo(1 / (1 - rep.room!.rewritableShare), 9);
    expect(renderReport(rep)).toContain(`take ${(100 * rep.room!.rewritableShare).toFixed(0)}% of the original's kernel time`);
    // Without latency the run does not time the original either.
    const quiet = await runCli('optimize', REAL.wake, path.join(dir, 'p.onnx'), '--energy', '0.995', '--no-latency', '--json');
    expect((JSON.parse(quiet.out) as Report).room).toBeUndefined();
  });
});
