/** --target-macs end to end through the CLI on a real model: the budget is met in the written file. */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { InspectResult } from '../../src/cli/inspect.js';
import type { Report } from '../../src/report/report.js';
import { nonProgress, runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

const SHAPE = ['--shape', 'x:1x3x48x192'];

async function inspectJson(file: string): Promise<InspectResult> {
  const r = await runCli('inspect', file, ...SHAPE, '--json');
  expect(r.code).toBe(0);
  return JSON.parse(r.out) as InspectResult;
}

describe('--target-macs through the CLI', () => {
  it('cls at 0.9: the report says met, and the written model has at most 90% of the MACs when inspected', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-macs-'));
    const out = path.join(dir, 'o.onnx');
    const r = await runCli('optimize', REAL.cls, out, ...SHAPE, '--target-macs', '0.9', '--no-latency', '--json');
    expect(nonProgress(r.err)).toEqual([]);
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    const b = rep.budget!;
    expect(b).toMatchObject({ kind: 'macs', target: 0.9, met: true });
    expect(rep.policy).toMatch(/MACs/i);
    expect(rep.layers.some((l) => !l.skipped)).toBe(true);
    expect(b.achieved).toBeLessThanOrEqual(0.9);
    expect(b.achieved).toBeCloseTo(rep.output.macs! / rep.input.macs!, 9);
    // Counted again from the files: every decomposable layer of OUT (the chains' convs
    // among them) against IN's.
    expect(existsSync(out)).toBe(true);
    const [a, o] = [await inspectJson(REAL.cls), await inspectJson(out)];
    expect(a.macs).toBe(rep.input.macs);
    expect(o.macs! / a.macs!).toBeLessThanOrEqual(0.9);
    expect(o.macs).toBe(rep.output.macs);
    expect(rep.verify!.pass).toBe(true);
  });
});
