/**
 * Issue 6 beyond the fuzz suites: NaN/Inf weights skip only their layer; the input is never
 * modified and OUT is written atomically or not at all (CLI level, including a full disk
 * simulated with RLIMIT_FSIZE); same input, options and seed give byte-identical files.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { encodeModel } from '../../src/onnx/codec.js';
import type { Report } from '../../src/report/report.js';
import { createRng } from '../../src/util/rng.js';
import { DEEPA, listDir, removeTmpDirs, tmpDir } from '../onnx/helpers.js';
import { nonProgress, runCli } from '../helpers/cli.js';

afterAll(removeTmpDirs);

const HERE = path.dirname(fileURLToPath(import.meta.url));

const run = runCli;

const hash = (f: string): string => createHash('sha256').update(fs.readFileSync(f)).digest('hex');

function expectCleanError(r: { code: number; err: string }): void {
  expect(r.code).toBe(2);
  const lines = r.err.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^onnx-lr: /);
  expect(r.err).not.toMatch(/internal error|\n\s+at /);
}

/** x [4, 32] → MatMul w1 → MatMul w2 (Gemm with transB when `gemm`), one weight poisoned. */
function poisonedModel(poison: number, gemm = false): Uint8Array {
  const rng = createRng(3);
  const w = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [4, 32]);
  const w1 = w(32 * 32);
  w1[5] = poison;
  w1[700] = poison;
  const h = gemm
    ? b.node('Gemm', [x, b.init('w1', [32, 32], w1)], { transB: 1 }, { name: 'bad' })
    : b.node('MatMul', [x, b.init('w1', [32, 32], w1)], {}, { name: 'bad' });
  const y = b.node('MatMul', [h, b.init('w2', [32, 32], w(1024))], {}, { name: 'good' });
  b.output(y, [4, 32]);
  return encodeModel(b.build());
}

describe('NaN / Inf in a weight: that layer is skipped, the rest proceeds', () => {
  for (const [label, poison, gemm] of [['NaN in a MatMul', NaN, false], ['+Inf in a Gemm', Infinity, true], ['-Inf in a MatMul', -Infinity, false]] as const) {
    it(label, async () => {
      const dir = tmpDir();
      const f = path.join(dir, 'in.onnx');
      fs.writeFileSync(f, poisonedModel(poison, gemm));
      const before = hash(f);
      const out = path.join(dir, 'out.onnx');
      const r = await run('optimize', f, out, '--rank', '4', '--min-params', '0', '--no-latency', '--json');
      // The original model's output is itself NaN, so verification cannot pass: exit 1, OUT written.
      // Only the 10-second progress line may print (on a loaded machine).
      expect(nonProgress(r.err)).toEqual([]);
      expect(r.code).toBe(1);
      const rep = JSON.parse(r.out) as Report;
      const bad = rep.layers.find((l) => l.name === 'bad')!;
      const good = rep.layers.find((l) => l.name === 'good')!;
      expect(bad.skipped).toBe(true);
      expect(bad.reason).toMatch(/non-finite|NaN|Inf/i);
      expect(good.skipped).toBeFalsy();
      expect(good.ranks).toEqual([4]);
      expect(rep.verify!.reasons.join(' ')).toMatch(/NaN|Inf/i);
      const s = await ort.InferenceSession.create(out, { logSeverityLevel: 4 });
      await s.release();
      expect(hash(f)).toBe(before);
    });
  }

  it('with --no-verify the run succeeds (exit 0) and the poisoned weight is kept as it was', async () => {
    const dir = tmpDir();
    const f = path.join(dir, 'in.onnx');
    fs.writeFileSync(f, poisonedModel(NaN));
    const r = await run('optimize', f, path.join(dir, 'out.onnx'), '--rank', '4', '--min-params', '0', '--no-verify', '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers.filter((l) => !l.skipped).map((l) => l.name)).toEqual(['good']);
    expect(rep.output.ops.MatMul).toBe(3);
  });

  it('the report carries a warning naming the layers skipped for NaN/Inf', async () => {
    const dir = tmpDir();
    const f = path.join(dir, 'in.onnx');
    fs.writeFileSync(f, poisonedModel(NaN));
    const r = await run('optimize', f, path.join(dir, 'out.onnx'), '--rank', '4', '--min-params', '0', '--no-verify', '--json');
    const rep = JSON.parse(r.out) as Report;
    expect(rep.notes.join('\n')).toMatch(/warning: 1 layer\(s\) skipped for NaN\/Inf in their weights: bad/);
  });
});

describe('no data lost', () => {
  it('inspect, convert and optimize never modify IN or its data file', async () => {
    const dir = tmpDir();
    const f = path.join(dir, 'm.onnx');
    expect((await run('convert', DEEPA, f, '--external-data', '--threshold', '4096')).code).toBe(0);
    const files = [f, ...fs.readdirSync(dir).filter((n) => n.endsWith('.data')).map((n) => path.join(dir, n))];
    expect(files).toHaveLength(2);
    const before = files.map(hash);
    const outs = tmpDir();
    const runs: string[][] = [
      ['inspect', f, '--json'],
      ['convert', f, path.join(outs, 'a.onnx')],
      ['convert', f, path.join(outs, 'b.onnx'), '--external-data'],
      ['convert', f, path.join(outs, 'c.onnx'), '--inline'],
      ['optimize', f, path.join(outs, 'd.onnx'), '--no-latency', '--rank', '8', '--min-params', '0'],
      ['optimize', f, path.join(outs, 'e.onnx'), '--no-verify', '--external-data'],
    ];
    for (const argv of runs) {
      const r = await run(...argv);
      expect(r.code, `${argv.join(' ')}: ${r.err}`).toBeLessThanOrEqual(1);
      expect(files.map(hash), argv.join(' ')).toEqual(before);
    }
    expect(listDir(dir)).toEqual(['m.onnx', path.basename(files[1])]);
  });

  it('OUT in a missing folder, under a regular file, or on a read-only file system: exit 2, nothing written', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'plain.txt');
    fs.writeFileSync(file, 'x');
    for (const cmd of ['convert', 'optimize']) {
      for (const out of [path.join(dir, 'no', 'such', 'out.onnx'), path.join(file, 'out.onnx'), '/proc/onnx-lr-out.onnx']) {
        const r = await run(cmd, DEEPA, out, ...(cmd === 'optimize' ? ['--no-verify'] : []));
        expectCleanError(r);
        expect(fs.existsSync(out)).toBe(false);
      }
    }
    expect(listDir(dir)).toEqual(['plain.txt']);
  });

  it('a failed optimize leaves an existing OUT untouched', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'out.onnx');
    fs.writeFileSync(out, 'previous');
    // --shape errors used to be found only at verification, after OUT was overwritten (src/cli/inspect.ts).
    for (const bad of [['--method', 'bogus'], ['--exclude', '('], ['--shape', 'nope:1x2'], ['--shape', 'onnx::Flatten_0:1x2']]) {
      const r = await run('optimize', DEEPA, out, ...bad);
      expectCleanError(r);
      expect(fs.readFileSync(out, 'utf8')).toBe('previous');
    }
    expect(listDir(dir)).toEqual(['out.onnx']);
  });

  it('a model ORT cannot run: verification fails before OUT is written (exit 2, old OUT kept); --no-verify writes it', async () => {
    const dir = tmpDir();
    const rng = createRng(5);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [4, 32]);
    const h = b.node('MatMul', [x, b.init('w', [32, 32], Float32Array.from({ length: 1024 }, () => rng.normal()))], {}, { name: 'mm' });
    // An op of a domain ORT has no kernels for: we can still parse and rewrite the model.
    const y = b.node('Frobnicate', [h], {}, { name: 'custom', domain: 'com.example' });
    b.output(y, [4, 32]);
    const m = b.build();
    m.opsetImport.push({ domain: 'com.example', version: 1 });
    const f = path.join(dir, 'in.onnx');
    fs.writeFileSync(f, encodeModel(m));
    const out = path.join(dir, 'out.onnx');
    fs.writeFileSync(out, 'previous');
    const r = await run('optimize', f, out, '--rank', '4', '--min-params', '0', '--no-latency');
    expectCleanError(r);
    expect(r.err).toMatch(/cannot verify: .*nothing written \(--no-verify/);
    expect(fs.readFileSync(out, 'utf8')).toBe('previous');
    expect(listDir(dir)).toEqual(['in.onnx', 'out.onnx']);
    const r2 = await run('optimize', f, out, '--rank', '4', '--min-params', '0', '--no-verify', '--force', '--json');
    expect(r2.code, r2.err).toBe(0);
    expect((JSON.parse(r2.out) as Report).output.ops.MatMul).toBe(2);
  });

  // A full disk at the CLI level: the child process gets EFBIG once it writes past
  // RLIMIT_FSIZE (SIGXFSZ ignored so the write fails instead of killing the process).
  const canLimit = process.platform === 'linux' && fs.existsSync('/bin/bash');
  it.skipIf(!canLimit)('a disk that fills up while writing OUT (and OUT.data): exit 2, one line, no OUT, no temp file, the old OUT kept', () => {
    const dir = tmpDir();
    for (const [argv, kb] of [
      [['convert', DEEPA, 'OUT'], 100],
      [['convert', DEEPA, 'OUT', '--external-data', '--threshold', '1024'], 100],
      [['optimize', DEEPA, 'OUT', '--no-verify'], 60],
    ] as const) {
      const out = path.join(dir, 'out.onnx');
      fs.writeFileSync(out, 'previous');
      const args = argv.map((a) => (a === 'OUT' ? out : a));
      const cmd = `trap "" XFSZ; ulimit -f ${kb}; exec "${process.execPath}" --import tsx "${path.join(HERE, 'cli-child.ts')}" ${args.map((a) => `"${a}"`).join(' ')}`;
      const p = spawnSync('/bin/bash', ['-c', cmd], { encoding: 'utf8', cwd: path.resolve(HERE, '../..') });
      expectCleanError({ code: p.status ?? -1, err: p.stderr });
      expect(p.stderr).toMatch(/EFBIG|too large/);
      expect(fs.readFileSync(out, 'utf8')).toBe('previous');
      expect(listDir(dir)).toEqual(['out.onnx']);
    }
  });
});

describe('determinism: same input, options and seed → byte-identical files', () => {
  it('convert to and from external data', async () => {
    const [a, b] = [tmpDir(), tmpDir()];
    for (const d of [a, b]) {
      expect((await run('convert', DEEPA, path.join(d, 'm.onnx'), '--external-data', '--threshold', '1024')).code).toBe(0);
      expect((await run('convert', path.join(d, 'm.onnx'), path.join(d, 'back.onnx'), '--inline')).code).toBe(0);
    }
    // The data file is named by its content: the same name in both folders.
    expect(listDir(b)).toEqual(listDir(a));
    for (const f of listDir(a)) expect(hash(path.join(b, f)), f).toBe(hash(path.join(a, f)));
    // Back inline, the model is the original byte for byte.
    expect(hash(path.join(a, 'back.onnx'))).toBe(hash(DEEPA));
  });

  it('optimize of an external-data model with --external-data, twice', async () => {
    const src = tmpDir();
    const f = path.join(src, 'm.onnx');
    expect((await run('convert', DEEPA, f, '--external-data', '--threshold', '1024')).code).toBe(0);
    const [a, b] = [tmpDir(), tmpDir()];
    for (const d of [a, b]) {
      const r = await run('optimize', f, path.join(d, 'o.onnx'), '--external-data', '--rank', '8', '--min-params', '0', '--seed', '7', '--no-latency');
      expect(r.code).toBeLessThanOrEqual(1);
    }
    expect(listDir(a)).toEqual(['o.onnx', expect.stringMatching(/^o\.onnx\.[0-9a-f]{12}\.data$/)]);
    expect(listDir(b)).toEqual(listDir(a));
    for (const f2 of listDir(a)) expect(hash(path.join(b, f2)), f2).toBe(hash(path.join(a, f2)));
  });
});
