import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Report } from '../../src/report/report.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

describe('the verdict follows --max-error cosine:C', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-verdict-'));
  const run = async (...extra: string[]): Promise<{ code: number; report: Report }> => {
    const r = await runCli('optimize', REAL.wake, path.join(dir, `o${extra.length}.onnx`), '--max-error', 'cosine:0.9995', '--no-latency', '--json', ...extra);
    return { code: r.code, report: JSON.parse(r.out) as Report };
  };

  it('judges at the budget\'s cosine unless --min-cosine says otherwise', async () => {
    const a = await run();
    expect(a.report.verify!.minCosine).toBe(0.9995);
    const worst = Math.min(...a.report.verify!.outputs.map((o) => o.cosine));
    expect(a.report.verify!.pass).toBe(worst >= 0.9995);
    expect(a.code).toBe(a.report.verify!.pass ? 0 : 1);

    // The report says where the time went, phase by phase (no latency: --no-latency).
    const t = a.report.timings!;
    expect(Object.keys(t).sort()).toEqual(['allocation', 'factorization', 'sensitivity', 'shapes', 'verification', 'write']);
    for (const v of Object.values(t)) expect(v).toBeGreaterThanOrEqual(0);
    expect(Object.values(t).reduce((x, y) => x + y, 0)).toBeLessThanOrEqual(a.report.seconds);

    const b = await run('--min-cosine', '0.5');
    expect(b.report.verify!.minCosine).toBe(0.5);
    expect(b.report.verify!.pass).toBe(true);
  });
});
