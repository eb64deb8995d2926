/**
 * Data-aware embedding Gather end to end: `optimize --calib ids.npy` collects how often the
 * calibration indices look up each row of the table (src/calib/stats.ts, 'index' plan) and
 * passes/gather-svd.ts weights the rows by those counts. When the lookups use a skewed
 * subset of rows (95% of them fall on 16 of 200), the rank-16 fit keeps those rows almost
 * exactly, so on held-out indices from the same distribution (`--verify-data`, measured in
 * ORT) the output error is several times lower than the weight-only fit's
 * (`--no-data-aware`). Calibration indices outside the table fail the model in ORT itself:
 * one line naming the Gather and the index, exit 2, nothing written.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { encodeNpy } from '../../src/io/npy.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType } from '../../src/onnx/schema.js';
import { createRng } from '../../src/util/rng.js';
import { runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-gather-calib-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const V = 200, D = 32, T = 8, C = 6, HOT = 16;

/** ids [1, T] int64 → Gather(table [V, D]) → MatMul(head [D, C]); the head is too small to pay. */
function model(): string {
  const rng = createRng(3);
  const b = new ModelBuilder({ opset: 13 });
  const e = b.node('Gather', [b.init('table', [V, D], Float32Array.from({ length: V * D }, () => rng.normal())), b.input('ids', [1, T], DataType.INT64)], {}, { name: 'embed' });
  b.output(b.node('MatMul', [e, b.init('head', [D, C], Float32Array.from({ length: D * C }, () => 0.2 * rng.normal()))], {}, { name: 'head' }));
  const file = path.join(dir, 'embed.onnx');
  writeFileSync(file, encodeModel(b.build()));
  return file;
}

/** n samples [1, T]: 95% of the lookups on HOT rows spread over the table, the rest uniform; `bad` leading ids past the table. */
function ids(name: string, n: number, seed: number, bad = 0): string {
  const r = createRng(seed);
  const data = BigInt64Array.from({ length: n * T }, (_, k) =>
    BigInt(k < bad ? V + 5 : r.next() < 0.95 ? (Math.floor(r.next() * HOT) * 7) % V : Math.floor(r.next() * V)));
  const file = path.join(dir, name);
  writeFileSync(file, encodeNpy({ dtype: 'i8', shape: [n, 1, T], data }));
  return file;
}

describe('data-aware Gather from calibration indices (CLI)', () => {
  const inPath = model();
  const calib = ids('calib.npy', 32, 5);
  const held = ids('held.npy', 8, 6);

  const optimize = async (tag: string, extra: string[]) => {
    const out = path.join(dir, `${tag}.onnx`);
    const report = path.join(dir, `${tag}.json`);
    const r = await runCli('optimize', inPath, out, '--rank', String(HOT), '--min-params', '0', '--save', 'params',
      '--no-latency', '--min-cosine', '0', '--verify-data', held, ...extra, '--report', report);
    expect(r.code, r.err + r.out).toBe(0);
    const rep = JSON.parse(readFileSync(report, 'utf8'));
    const done = rep.layers.filter((l: { skipped?: boolean }) => !l.skipped);
    expect(done.map((l: { pass: string }) => l.pass)).toEqual(['gather-svd']);
    const docs = decodeModel(readFileSync(out)).graph!.node.map((n) => n.docString ?? '').join('\n');
    return { err: Math.max(...rep.verify.outputs.map((o: { relL2: number }) => o.relL2)), note: done[0].note as string | undefined, notes: rep.notes as string[], docs };
  };

  it(`rank ${HOT}: the row weights from the calibration lookups cut the held-out error several times`, async () => {
    const plain = await optimize('plain', ['--calib', calib, '--no-data-aware']);
    const aware = await optimize('aware', ['--calib', calib]);
    expect(plain.docs).not.toMatch(/weighted/);
    expect(aware.docs).toMatch(/rows weighted by their calibration lookups/);
    expect(aware.notes.some((n) => /data-aware decomposition: input statistics for \d+ layer/.test(n))).toBe(true);
    expect(plain.err).toBeGreaterThan(0.3);
    expect(aware.err).toBeLessThan(plain.err / 3);
    // The layer's line in the report says what the weights came from, anchored run or not
    // (a Gather's lookup counts do not depend on upstream rewrites: no "fitted independently instead").
    expect(aware.note).toBe(`rows weighted by ${32 * T} calibration lookup(s)`);
    expect(aware.notes.some((n) => /fitted independently instead/.test(n))).toBe(false);
    const independent = await optimize('aware-independent', ['--calib', calib, '--no-anchor']);
    expect(independent.note).toBe(`rows weighted by ${32 * T} calibration lookup(s)`);
    expect(independent.err).toBeLessThan(plain.err / 3);
  }, 120_000);

  it('calibration indices outside the table: one line from ORT naming the Gather, exit 2, nothing written', async () => {
    const out = path.join(dir, 'bad.onnx');
    const r = await runCli('optimize', inPath, out, '--rank', String(HOT), '--min-params', '0', '--save', 'params', '--no-latency', '--calib', ids('bad.npy', 4, 7, 3));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/the model failed on the calibration inputs \(.*calib.*\): .*Gather node\. Name:'embed'.*out of data bounds, idx=205/);
    expect(r.err).not.toMatch(/\n\s+at /);
    expect(existsSync(out)).toBe(false);
  }, 60_000);
});
