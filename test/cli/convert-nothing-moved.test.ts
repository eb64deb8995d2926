/** `convert --external-data` that moves no tensor says so (it used to print only "wrote OUT"). */
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { nonProgress, runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

describe('convert --external-data that moves nothing', () => {
  it('says so and why, and writes OUT with every tensor inside', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-convert-'));
    // The OCR classifier keeps its weights in Constant nodes, which stay inline.
    const r = await runCli('convert', REAL.cls, path.join(dir, 'o.onnx'), '--external-data');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^wrote .*o\.onnx \(.*\)\n--external-data moved nothing: no initializer of at least 1024 bytes can leave OUT .*Constant nodes/);
    expect(nonProgress(r.err)).toEqual([]);
    expect(readdirSync(dir)).toEqual(['o.onnx']);
  });

  it('names the threshold given', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-convert-'));
    const r = await runCli('convert', REAL.wake, path.join(dir, 'o.onnx'), '--external-data', '--threshold', String(2 ** 30));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/moved nothing: no initializer of at least 1073741824 bytes/);
  });

  it('a move that happens is reported as before, with no such line', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-convert-'));
    const r = await runCli('convert', REAL.wake, path.join(dir, 'o.onnx'), '--external-data', '--threshold', '4096');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\.data \(/);
    expect(r.out).not.toMatch(/moved nothing/);
  });
});
