/**
 * Verification stays held out: a budgeted run without --calib measures its candidates on
 * seeded random calibration inputs, and verification must then compare on other inputs,
 * not on the ones the ranks were chosen for.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import type { Report } from '../../src/report/report.js';
import { buildFeeds } from '../../src/verify/inputs.js';
import type { Feeds } from '../../src/verify/tensor.js';
import { nonProgress, runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

// A pass-through spy: records every set of random inputs the run builds.
vi.mock('../../src/verify/inputs.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/verify/inputs.js')>();
  return { ...m, buildFeeds: vi.fn(m.buildFeeds) };
});

const bytesOf = (f: Feeds): string =>
  Object.keys(f).sort().map((k) => `${k}:${Buffer.from(f[k]!.data.buffer, f[k]!.data.byteOffset, f[k]!.data.byteLength).toString('base64')}`).join('|');

describe('calibration and verification inputs', () => {
  it('a budget without --calib calibrates on seeded inputs that verification does not use', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-held-'));
    const spy = vi.mocked(buildFeeds);
    spy.mockClear();
    const r = await runCli('optimize', REAL.cls, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x192',
      '--target-params', '0.9', '--heaviest', '5', '--no-latency', '--json');
    expect(nonProgress(r.err)).toEqual([]);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers.some((l) => !l.skipped)).toBe(true);
    const nCalib = Number(/^(\d+) seeded random input sets/.exec(rep.calibration ?? '')?.[1]);
    expect(nCalib).toBeGreaterThan(0);
    const runs = rep.verify!.runs;
    expect(runs).toBeGreaterThan(0);
    // The calls that built them, by their count (one each).
    const built = spy.mock.calls.map((c, i) => ({ count: c[1]?.count ?? 1, res: spy.mock.results[i]!.value as ReturnType<typeof buildFeeds> }));
    const calib = built.filter((b) => b.count === nCalib);
    const verify = built.filter((b) => b.count === runs);
    expect(calib).toHaveLength(1);
    expect(verify).toHaveLength(1);
    if (!calib[0]!.res.ok || !verify[0]!.res.ok) throw new Error('feeds not built');
    const c = calib[0]!.res.value.feeds.map(bytesOf);
    const v = verify[0]!.res.value.feeds.map(bytesOf);
    expect(c).toHaveLength(nCalib);
    expect(v).toHaveLength(runs);
    // Distinct within each set, and no verification input is a calibration input.
    expect(new Set(c).size).toBe(nCalib);
    expect(new Set(v).size).toBe(runs);
    for (const x of v) expect(c).not.toContain(x);
    // What the report says agrees.
    expect(Number(/seed (\d+)/.exec(rep.calibration!)![1])).not.toBe(rep.verify!.seed);
  });
});
