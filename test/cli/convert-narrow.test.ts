/**
 * `onnx-lr convert --narrow-reorder`: narrow conv outputs reordered out of ORT's blocked
 * layout by a same-shape Reshape, checked in ORT against IN and timed before OUT is
 * committed; IN untouched; a model without such a conv is said to be unchanged.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { machineNchwcBlock } from '../../src/verify/cpu-block.js';
import { runCli } from '../helpers/cli.js';
import { narrowModel, wideModel } from '../helpers/narrow-model.js';
import { SchemaValidator } from '../report/json-schema.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-convert-narrow-'));
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

describe('convert --narrow-reorder', () => {
  it('puts a Reshape after each narrow head, checks OUT against IN, times both, and leaves IN as it was', async () => {
    const inPath = path.join(dir, 'in.onnx');
    writeFileSync(inPath, encodeModel(narrowModel({ size: 32 })));
    const before = sha(inPath);
    const outPath = path.join(dir, 'out.onnx');
    const r = await runCli('convert', inPath, outPath, '--narrow-reorder');
    expect(r.code, r.err).toBe(0);
    expect(sha(inPath)).toBe(before);
    const block = machineNchwcBlock();
    expect(r.out).toContain(`narrow reorder: 2 conv output(s) of 1/4 channel(s) reordered before their readers (Resize, Add; ${block === undefined ? 'ORT has no blocked conv layout on this CPU; for a block of 16' : `ORT's conv channel block here: ${block}`})`);
    expect(r.out).toMatch(/checked in ONNX Runtime against IN on 3 seeded random inputs: worst output cosine (0\.99999\d|1\.000000)/);
    // Timed where ORT has a blocked layout (which way it goes is the machine's to say), not elsewhere.
    expect(/latency ORT-node \(1 thread\): IN [\d.]+ ms -> OUT [\d.]+ ms \([\d.]+x, \d+ runs each\)/.test(r.out)).toBe(block !== undefined);
    const out = decodeModel(readFileSync(outPath));
    expect(out.graph!.node.filter((n) => n.opType === 'Reshape')).toHaveLength(2);
    // Again on OUT: the heads are behind their Reshapes already.
    const again = await runCli('convert', outPath, path.join(dir, 'again.onnx'), '--narrow-reorder');
    expect(again.code, again.err).toBe(0);
    expect(decodeModel(readFileSync(path.join(dir, 'again.onnx'))).graph!.node.filter((n) => n.opType === 'Reshape')).toHaveLength(2);
  }, 60_000);

  it('inspect says so of a model with narrow heads (text and schema-valid JSON), and nothing of one without', async () => {
    const inPath = path.join(dir, 'inspect.onnx');
    writeFileSync(inPath, encodeModel(narrowModel()));
    const text = await runCli('inspect', inPath, '--no-profile');
    expect(text.code, text.err).toBe(0);
    const block = machineNchwcBlock();
    expect(text.out).toContain(`note: 2 conv(s) to 1/4 channel(s), read by Resize, Add: ${block === undefined
      ? 'ONNX Runtime\'s CPU provider has no blocked conv layout on this CPU, but on x86-64 it pads them to 8 or 16 channels in one'
      : `ONNX Runtime's CPU provider pads them to ${block} channels in its blocked layout`}, and runs the ops that read them on the padding too`);
    const json = JSON.parse((await runCli('inspect', inPath, '--no-profile', '--json')).out) as Record<string, unknown>;
    expect(json.narrowNote).toMatch(/convert --narrow-reorder/);
    expect(new SchemaValidator(path.resolve('schema')).validate('inspect.schema.json', json)).toEqual([]);
    const wide = wideModel();
    writeFileSync(path.join(dir, 'inspect-wide.onnx'), encodeModel(wide));
    expect((await runCli('inspect', path.join(dir, 'inspect-wide.onnx'), '--no-profile')).out).not.toMatch(/blocked layout/);
  }, 60_000);

  it('says when there is nothing to reorder, and --shape needs --compute or --narrow-reorder', async () => {
    const wide = wideModel();
    const inPath = path.join(dir, 'wide.onnx');
    writeFileSync(inPath, encodeModel(wide));
    const r = await runCli('convert', inPath, path.join(dir, 'wide-out.onnx'), '--narrow-reorder');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/narrow reorder: no conv to at most half the block read by an op other than a conv \(.*\): no change/);
    const shape = await runCli('convert', inPath, path.join(dir, 'x.onnx'), '--shape', 'x:1x32x8x8');
    expect(shape.code).toBe(2);
    expect(shape.err).toMatch(/--shape needs --compute or --narrow-reorder/);
  }, 60_000);
});
