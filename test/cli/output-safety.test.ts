/**
 * Issue 16, writing outputs at the CLI: OUT and --report may not be IN, a file IN reads,
 * or each other (exit 2, nothing written, before the run); they must be regular files or
 * absent; with --external-data nothing is committed that ORT refuses; a --report that
 * cannot be written after OUT was still leaves the verdict on stdout.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { main } from '../../src/cli/main.js';
import { saveModel } from '../../src/onnx/file.js';
import { runCli as run } from '../helpers/cli.js';
import { floatFeed, listDir, matmulAddModel, removeTmpDirs, runOrt, sha, tmpDir } from '../onnx/helpers.js';

afterAll(removeTmpDirs);

const FAST = ['--rank', '8', '--min-params', '0', '--no-latency'];
const feeds = { X: floatFeed(5, [2, 32]) };

/** d/model.onnx with its weight W in d/<data> (default w.bin). */
function modelWithDataFile(dir: string, data = 'w.bin'): string {
  const f = path.join(dir, 'model.onnx');
  saveModel(matmulAddModel(32, 16), f, { externalData: { location: data, threshold: 1024 } });
  return f;
}

const snapshot = (dir: string): Record<string, string> =>
  Object.fromEntries(listDir(dir).map((f) => [f, fs.lstatSync(path.join(dir, f)).isFile() ? sha(fs.readFileSync(path.join(dir, f))) : 'special']));

function expectRefused(r: { code: number; err: string }, re: RegExp): void {
  expect(r.code).toBe(2);
  expect(r.err.trim().split('\n')).toHaveLength(1);
  expect(r.err).toMatch(/^onnx-lr: /);
  expect(r.err).toMatch(re);
}

describe('OUT and --report may not replace what IN reads, or each other', () => {
  it('optimize d/model.onnx d/w.bin (IN\'s weight file) is refused, also with --force', async () => {
    const dir = tmpDir();
    const f = modelWithDataFile(dir);
    const before = snapshot(dir);
    expectRefused(await run('optimize', f, path.join(dir, 'w.bin'), ...FAST), /w\.bin is the input's external data file/);
    expectRefused(await run('optimize', f, path.join(dir, 'w.bin'), ...FAST, '--force'), /w\.bin/);
    expectRefused(await run('convert', f, path.join(dir, 'w.bin'), '--force'), /w\.bin/);
    expect(snapshot(dir)).toEqual(before);
  });

  it('--external-data beside an input whose data file is named OUT.data leaves that file alone', async () => {
    const dir = tmpDir();
    const f = modelWithDataFile(dir, 'out.onnx.data');
    const y = await runOrt(f, feeds);
    const r = await run('optimize', f, path.join(dir, 'out.onnx'), ...FAST, '--external-data');
    expect(r.code).toBeLessThanOrEqual(1);
    expect(await runOrt(f, feeds)).toEqual(y);
    expect(listDir(dir).filter((n) => n.startsWith('out.onnx.'))).toHaveLength(2);
  });

  it('--report may not be IN, a data file of IN, or OUT (with --force neither); nothing is written', async () => {
    const dir = tmpDir();
    const f = modelWithDataFile(dir);
    const out = path.join(dir, 'out.onnx');
    const before = snapshot(dir);
    expectRefused(await run('optimize', f, out, ...FAST, '--report', f), /--report .* is the input/);
    expectRefused(await run('optimize', f, out, ...FAST, '--report', path.join(dir, 'w.bin')), /--report .*w\.bin is the input's external data file/);
    expectRefused(await run('optimize', f, out, ...FAST, '--report', out), /--report .* is the same file as OUT/);
    expectRefused(await run('optimize', f, f, ...FAST, '--force', '--report', f), /same file as OUT/);
    expect(snapshot(dir)).toEqual(before);
  });
});

describe('OUT and --report must be regular files or absent', () => {
  it('a character device (like /dev/null), a FIFO or a link to one as OUT or --report is refused and left as it is', async () => {
    const dir = tmpDir();
    const f = path.join(dir, 'm.onnx');
    saveModel(matmulAddModel(32, 16), f);
    const fifo = path.join(dir, 'pipe');
    execFileSync('mkfifo', [fifo]);
    // A device node of our own (as root; the same device as /dev/null): a broken build replaces only it.
    const dev = path.join(dir, 'null');
    execFileSync('mknod', ['-m', '666', dev, 'c', '1', '3']);
    fs.symlinkSync('/dev/null', path.join(dir, 'link-null'));
    fs.symlinkSync(fifo, path.join(dir, 'link'));
    const out = path.join(dir, 'o.onnx');
    expectRefused(await run('optimize', f, dev, ...FAST), /OUT .*null is a character device/);
    expectRefused(await run('convert', f, dev), /character device/);
    expectRefused(await run('convert', f, path.join(dir, 'link-null')), /link to a character device/);
    expectRefused(await run('optimize', f, fifo, ...FAST), /is a FIFO/);
    expectRefused(await run('optimize', f, out, ...FAST, '--report', dev), /--report .*null is a character device/);
    expectRefused(await run('optimize', f, out, ...FAST, '--report', path.join(dir, 'link')), /--report .* is a link to a FIFO/);
    expect(fs.statSync(dev).isCharacterDevice()).toBe(true);
    expect(listDir(dir)).toEqual(['link', 'link-null', 'm.onnx', 'null', 'pipe']);
    expect(fs.lstatSync(fifo).isFIFO()).toBe(true);
    expect(fs.lstatSync(path.join(dir, 'link-null')).isSymbolicLink()).toBe(true);
  });

  it('/proc/self/fd/1 (a pipe or socket here) as OUT is refused', () => {
    const dir = tmpDir();
    const f = path.join(dir, 'm.onnx');
    saveModel(matmulAddModel(32, 16), f);
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/fuzz/cli-child.ts', 'convert', f, '/proc/self/fd/1'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/onnx-lr: OUT \/proc\/self\/fd\/1 is a link to a (FIFO|socket|character device), not a regular file/);
    expect(listDir(dir)).toEqual(['m.onnx']);
  });

  it('an OUT name of 255 bytes works', async () => {
    const dir = tmpDir();
    const f = path.join(dir, 'm.onnx');
    saveModel(matmulAddModel(32, 16), f);
    const out = path.join(dir, `${'x'.repeat(250)}.onnx`);
    expect((await run('convert', f, out)).code).toBe(0);
    expect((await run('convert', f, out, '--external-data')).code).toBe(0);
    expect(await runOrt(out, feeds)).toEqual(await runOrt(f, feeds));
  });
});

describe('with --external-data, only what ORT loads is committed', () => {
  it('a model ORT refuses once written with external data (an 8200-element Reshape shape) leaves nothing', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('X', [2, 32]);
    const y = b.node('MatMul', [x, b.init('W', [32, 16], Array.from({ length: 512 }, (_, i) => Math.sin(i)))]);
    b.output(b.node('Reshape', [y, b.initInt64('S', [8200], [2, 16, ...Array<number>(8198).fill(1)])]));
    const dir = tmpDir();
    const f = path.join(dir, 'in.onnx');
    saveModel(b.build(), f);
    const r = await run('optimize', f, path.join(dir, 'out.onnx'), ...FAST, '--external-data');
    expectRefused(r, /cannot verify: .*external.*nothing written/);
    expect(listDir(dir)).toEqual(['in.onnx']);
    // Inline, the same rewrite loads and is written.
    expect((await run('optimize', f, path.join(dir, 'out.onnx'), ...FAST)).code).toBeLessThanOrEqual(1);
    expect(listDir(dir)).toEqual(['in.onnx', 'out.onnx']);
  });
});

describe('a --report that cannot be written after OUT was', () => {
  it('prints the table and verdict first, then fails naming the report (exit 2)', async () => {
    const dir = tmpDir();
    const f = path.join(dir, 'm.onnx');
    saveModel(matmulAddModel(32, 16), f);
    const sub = path.join(dir, 'reports');
    fs.mkdirSync(sub);
    const report = path.join(sub, 'r.json');
    let out = '';
    let err = '';
    // The report's folder disappears while the run finishes (removed when the verdict is printed).
    const code = await main(['optimize', f, path.join(dir, 'o.onnx'), ...FAST, '--report', report], {
      out: (s) => { out += `${s}\n`; fs.rmSync(sub, { recursive: true, force: true }); },
      err: (s) => { err += `${s}\n`; },
    });
    expect(code).toBe(2);
    expect(out).toMatch(/verification \(ORT-node.*(PASS|FAIL)/);
    expect(err).toMatch(/^onnx-lr: .*--report.*reports/);
    expect(listDir(dir)).toEqual(['m.onnx', 'o.onnx']);
  });
});

describe('the file-size row compares like with like', () => {
  it('IN and OUT both count their protobuf and their external data file', async () => {
    const dir = tmpDir();
    const inFile = modelWithDataFile(dir);
    const out = path.join(dir, 'out.onnx');
    // The verdict does not matter here (rank 8 of a random 32x16 weight fails it): the sizes do.
    const r = await run('optimize', inFile, out, ...FAST, '--external-data', '--json');
    expect([0, 1]).toContain(r.code);
    const rep = JSON.parse(r.out) as { input: { bytes: number }; output: { bytes: number } };
    const size = (f: string): number => fs.statSync(path.join(dir, f)).size;
    expect(rep.input.bytes).toBe(size('model.onnx') + size('w.bin'));
    const outData = listDir(dir).filter((f) => f.startsWith('out.onnx.') && f.endsWith('.data'));
    expect(outData).toHaveLength(1);
    expect(rep.output.bytes).toBe(size('out.onnx') + size(outData[0]!));
  });
});
