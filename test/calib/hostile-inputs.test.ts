/**
 * Side inputs a careless or hostile user can hand the tool (calibration data, --input,
 * --verify-data, --plan): special files, memory bombs and malformed archives. Each must be
 * refused with one line naming the file (or option) and, for sizes, the limit, before
 * anything large is allocated; nothing may hang or end in "internal error".
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { deflateRawSync, deflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage } from '../../src/calib/image.js';
import { loadCalibration, type CalibOptions } from '../../src/calib/load.js';
import { encodeNpy, readNpy, type NpyArray } from '../../src/io/npy.js';
import { crc32, encodeNpz, parseNpz, readNpz } from '../../src/io/npz.js';
import type { ValueInfo } from '../../src/verify/session.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

const input = (name: string, shape: (number | string)[]): ValueInfo => ({ name, isTensor: true, type: 'float32', shape });
const f32 = (shape: number[]): NpyArray => ({ dtype: 'f4', shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => i) });

let dir: string;
const at = (...p: string[]): string => path.join(dir, ...p);
const writers: ChildProcess[] = [];

beforeAll(() => { dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-hostile-')); });
afterAll(() => {
  for (const w of writers) if (w.exitCode === null && w.pid !== undefined) w.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A FIFO with a writer that holds it open for a few seconds: code that opens it (the bug)
 * gets an empty read after that instead of hanging the test run for ever; code that
 * refuses it never opens it (the writer is killed after the tests).
 */
function fifo(name: string): string {
  const p = at(name);
  execFileSync('mkfifo', [p]);
  writers.push(spawn('sh', ['-c', 'exec 3>"$1"; sleep 3', 'sh', p], { stdio: 'ignore' }));
  return p;
}

function calibFails(p: string, opts: CalibOptions): string {
  const r = loadCalibration(p, opts);
  if (r.ok) throw new Error(`expected ${p} to be refused`);
  expect(r.error.message).not.toContain('\n');
  expect(r.error.message).not.toMatch(/internal error/);
  return r.error.message;
}

// ---------------------------------------------------------------- PNG / JPEG builders

function chunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** A PNG whose IHDR declares width×height (valid CRCs) with the given image data. */
function craftedPng(width: number, height: number, opts: { colour?: number; interlace?: number; raw?: Uint8Array } = {}): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = opts.colour ?? 0; ihdr[12] = opts.interlace ?? 0;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', deflateSync(opts.raw ?? new Uint8Array(1))), chunk('IEND', new Uint8Array(0)),
  ]);
}

/** The start of a baseline JPEG whose frame header declares width×height. */
function craftedJpeg(width: number, height: number): Buffer {
  const sof = Buffer.from([0xff, 0xc0, 0, 17, 8, height >> 8, height & 0xff, width >> 8, width & 0xff, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
  return Buffer.concat([Buffer.from([0xff, 0xd8]), Buffer.from([0xff, 0xe0, 0, 4, 0, 0]), sof, Buffer.from([0xff, 0xd9])]);
}

// ---------------------------------------------------------------- zip builder

interface Entry { name: string; stored: Uint8Array; method: number; crc: number; usize: number; extra?: Uint8Array; extraLen?: number }

/** A one-entry zip whose central directory says what `e` says (sizes may lie). */
function zip(e: Entry): Uint8Array {
  const name = Buffer.from(e.name);
  const lh = Buffer.alloc(30);
  lh.writeUInt32LE(0x04034b50, 0); lh.writeUInt16LE(20, 4); lh.writeUInt16LE(e.method, 8);
  lh.writeUInt32LE(e.crc, 14); lh.writeUInt32LE(e.stored.length, 18); lh.writeUInt32LE(e.usize >>> 0, 22); lh.writeUInt16LE(name.length, 26);
  const extra = Buffer.from(e.extra ?? new Uint8Array(0));
  const ch = Buffer.alloc(46);
  ch.writeUInt32LE(0x02014b50, 0); ch.writeUInt16LE(20, 4); ch.writeUInt16LE(20, 6); ch.writeUInt16LE(e.method, 10);
  ch.writeUInt32LE(e.crc, 16); ch.writeUInt32LE(e.stored.length, 20); ch.writeUInt32LE(e.usize >>> 0, 24);
  ch.writeUInt16LE(name.length, 28); ch.writeUInt16LE(e.extraLen ?? extra.length, 30); ch.writeUInt32LE(0, 42);
  const local = Buffer.concat([lh, name, Buffer.from(e.stored)]);
  const central = Buffer.concat([ch, name, extra]);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0); eocd.writeUInt16LE(1, 8); eocd.writeUInt16LE(1, 10);
  eocd.writeUInt32LE(central.length, 12); eocd.writeUInt32LE(local.length, 16);
  return Buffer.concat([local, central, eocd]);
}

// ---------------------------------------------------------------- tests

describe('special files as side inputs', () => {
  it('a FIFO as calibration data, --input array or .npz is refused without opening it', () => {
    const f = fifo('calib.npy');
    expect(calibFails(f, { inputs: [input('x', [1, 3])] })).toMatch(/calib\.npy is not a regular file/);
    const g = fifo('in.npy');
    const r = readNpy(g);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/in\.npy is not a regular file/);
    const z = readNpz(fifo('in.npz'));
    expect(z.ok).toBe(false);
  });

  it('a link to /dev/zero as calibration data or --input is refused, not read until memory runs out', () => {
    const link = at('zero.npy');
    symlinkSync('/dev/zero', link);
    expect(calibFails(link, { inputs: [input('x', [1, 3])] })).toMatch(/zero\.npy is not a regular file/);
    const r = readNpy(link);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.kind).toBe('io');
  });

  it('a FIFO in a calibration folder is skipped; the regular files are read', () => {
    const d = at('mixed');
    mkdirSync(d);
    writeFileSync(path.join(d, 'a.npy'), encodeNpy(f32([2, 3])));
    execFileSync('mkfifo', [path.join(d, 'b.npy')]);
    const r = loadCalibration(d, { inputs: [input('x', [1, 3])] });
    expect(r.ok && r.value.samples).toBe(2);
  });

  it('--plan, --calib, --verify-data and --input naming a FIFO end in one error line, exit 2', async () => {
    const out = at('never.onnx');
    const cases: [string[], RegExp][] = [
      [['--plan', fifo('plan.json')], /plan .*plan\.json is not a regular file/],
      [['--calib', fifo('c.npy'), '--target-params', '0.5'], /c\.npy is not a regular file/],
      [['--verify-data', fifo('v.npy')], /verification data .*v\.npy is not a regular file/],
      [['--input', `x:${fifo('x.npy')}`], /x\.npy is not a regular file/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli('optimize', REAL.cls, out, ...args);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(re);
      expect(r.err).not.toMatch(/internal error/);
      expect(r.err.trim().split('\n')).toHaveLength(1);
    }
  }, 60_000);
});

describe('images: declared size bounded before decoding', () => {
  it('a 60000x60000 PNG header (a ~100-byte file) is refused with the file and the limit, without allocating', () => {
    const bomb = craftedPng(60000, 60000);
    expect(bomb.length).toBeLessThan(120);
    const before = process.memoryUsage().arrayBuffers;
    const r = decodeImage(bomb, 'bomb.png');
    const grew = process.memoryUsage().arrayBuffers - before;
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.message).toMatch(/^bomb\.png: image is 60000x60000 .*1024 MiB input limit \(raise it with --max-input-mb\)/);
    expect(grew).toBeLessThan(64 * 2 ** 20);
  });

  it('a JPEG frame header declaring 60000x60000 is refused the same way', () => {
    const r = decodeImage(craftedJpeg(60000, 60000), 'bomb.jpg');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/^bomb\.jpg: image is 60000x60000 .*--max-input-mb/);
  });

  it('the bound follows maxBytes: a real 100x100 PNG passes at 1 GiB, is refused at 100 kB', () => {
    const png = craftedPng(100, 100, { raw: new Uint8Array(100 * 101) });
    expect(decodeImage(png, 'ok.png').ok).toBe(true);
    const file = at('small', 'img.png');
    mkdirSync(at('small'));
    writeFileSync(file, png);
    // The 10x10 samples fit; the 100x100 image they are resized from does not.
    const msg = calibFails(at('small'), { inputs: [input('x', [1, 1, 10, 10])], maxBytes: 100_000 });
    expect(msg).toMatch(/img\.png: image is 100x100 .*over the 100000 bytes input limit/);
    expect(loadCalibration(at('small'), { inputs: [input('x', [1, 1, 10, 10])], maxBytes: 200_000 }).ok).toBe(true);
  });

  it('an interlaced PNG whose data inflates far past its declared size is refused', () => {
    // 1x1 pixel declared, 8 MiB of zeros deflated into ~8 kB: pngjs inflates interlaced data without a bound.
    const png = craftedPng(1, 1, { interlace: 1, raw: new Uint8Array(8 * 2 ** 20) });
    expect(png.length).toBeLessThan(20_000);
    const r = decodeImage(png, 'lace.png');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/^lace\.png: cannot decode PNG: its image data inflates past 1x1 pixels/);
  });

  it('--resize 100000x100000 names the option and the limit (was: internal error)', async () => {
    const r = await runCli('optimize', REAL.cls, at('never2.onnx'), '--calib', at('small'), '--resize', '100000x100000');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^onnx-lr: --resize 100000x100000: .*input limit \(raise it with --max-input-mb\)/);
    // The library call names its resize too.
    const msg = calibFails(at('small'), { inputs: [input('x', [1, 3, 'h', 'w'])], resize: [100000, 100000] });
    expect(msg).toMatch(/^resize 100000x100000: .*input limit/);
  });
});

describe('--max-input-mb', () => {
  it('is in the help, sets the bound for calibration images, and must be a positive integer', async () => {
    for (const cmd of ['optimize', 'plan']) expect((await runCli(cmd, '--help')).out).toMatch(/--max-input-mb N +largest data file/);
    mkdirSync(at('mid'));
    writeFileSync(at('mid', 'img.png'), craftedPng(400, 400, { raw: new Uint8Array(400 * 401) }));
    const r = await runCli('optimize', REAL.cls, at('never3.onnx'), '--calib', at('mid'), '--resize', '48x192', '--max-input-mb', '1', '--no-verify');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^onnx-lr: .*img\.png: image is 400x400 \(0\.2 Mpixel, 1\.8 MiB decoded\), over the 1 MiB input limit \(raise it with --max-input-mb\)/);
    const zero = await runCli('optimize', REAL.cls, at('never3.onnx'), '--calib', at('mid'), '--max-input-mb', '0');
    expect(zero.code).toBe(2);
    expect(zero.err).toMatch(/--max-input-mb expects an integer in \[1, /);
  }, 60_000);
});

describe('.npz: declared sizes bounded before inflating', () => {
  const npyBytes = encodeNpy(f32([4, 3]));

  it('an entry declaring 3 GiB uncompressed is refused before inflating', () => {
    const stored = deflateRawSync(npyBytes);
    const z = zip({ name: 'x.npy', stored, method: 8, crc: crc32(npyBytes), usize: 3 * 2 ** 30 });
    const r = parseNpz(z, 'big.npz');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/^big\.npz: entry x\.npy declares 3\.00 GiB uncompressed, over the 1024 MiB input limit/);
  });

  it('an entry that inflates past its declared size stops at it (a deflate bomb)', () => {
    // 32 MiB of zeros deflate into ~32 kB; the directory claims the 128-byte .npy.
    const bombData = new Uint8Array(32 * 2 ** 20);
    const z = zip({ name: 'x.npy', stored: deflateRawSync(bombData), method: 8, crc: crc32(npyBytes), usize: npyBytes.length });
    expect(z.length).toBeLessThan(64_000);
    const r = parseNpz(z, 'bomb.npz');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/^bomb\.npz: entry x\.npy inflates past its declared size/);
  });

  it('the decoded total of all entries counts against maxBytes, and the calibration loader passes it on', () => {
    const z = encodeNpz({ x: f32([64, 3]), y: f32([64, 3]) }, { compress: true });
    expect(parseNpz(z, 'two.npz').ok).toBe(true);
    const r = parseNpz(z, 'two.npz', { maxBytes: 1000 });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/entry y\.npy declares .* \(after .* in earlier entries\), over the 1000 bytes input limit/);
    writeFileSync(at('two.npz'), z);
    expect(calibFails(at('two.npz'), { inputs: [input('x', [1, 3]), input('y', [1, 3])], maxBytes: 1000 })).toMatch(/two\.npz: entry x\.npy declares|two\.npz is .* over/);
  });

  it('an extra field running past the end of the file is a parse error naming the file (was: internal error)', () => {
    const z = zip({ name: 'x.npy', stored: npyBytes, method: 0, crc: crc32(npyBytes), usize: npyBytes.length, extraLen: 0xffff });
    const r = parseNpz(z, 'extra.npz');
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.kind).toBe('parse');
      expect(r.error.message).toMatch(/^extra\.npz: /);
    }
    // A Zip64 field that claims more bytes than its entry holds.
    const zip64 = Buffer.from([1, 0, 16, 0, 1, 2, 3, 4]);
    const z2 = zip({ name: 'x.npy', stored: npyBytes, method: 0, crc: crc32(npyBytes), usize: 0xffffffff, extra: zip64 });
    const r2 = parseNpz(z2, 'z64.npz');
    expect(r2.ok).toBe(false);
    if (!r2.ok) expect(r2.error.message).toMatch(/^z64\.npz: entry x\.npy: extra field runs past its entry/);
  });

  it('no truncation or corrupted length in the directory throws (every failure is a Result naming the file)', () => {
    const z = encodeNpz({ x: f32([3, 2]), y: f32([3]) });
    const cdStart = new DataView(z.buffer, z.byteOffset).getUint32(z.length - 22 + 16, true);
    let seed = 12345;
    const rand = (n: number): number => { seed = (seed >>> 0) * 1103515245 + 12345 >>> 0; return seed % n; };
    for (let k = 0; k < 600; k++) {
      const m = Uint8Array.from(k < z.length ? z.subarray(0, k) : z);
      // Past the truncations: large values over random bytes of the central directory and its end record.
      if (k >= z.length) for (let f = 0; f < 2; f++) { const o = cdStart + rand(z.length - cdStart - 1); m[o] = 0xff; m[o + 1] = rand(256); }
      let r;
      expect(() => { r = parseNpz(m, 'm.npz'); }).not.toThrow();
      if (r && !(r as { ok: boolean }).ok) expect((r as { error: Error }).error.message).toMatch(/^m\.npz/);
    }
  });

  it('a .npy header whose shape overflows is a parse error, not a huge allocation', () => {
    const hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }";
    const pad = hdr.padEnd(118, ' ') + '\n';
    const b = new Uint8Array(10 + pad.length);
    b.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
    new DataView(b.buffer).setUint16(8, pad.length, true);
    for (let i = 0; i < pad.length; i++) b[10 + i] = pad.charCodeAt(i);
    writeFileSync(at('huge.npy'), b);
    const r = readNpy(at('huge.npy'));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/huge\.npy: shape .* is too large/);
  });
});

describe('--max-input-mb bounds --input arrays too', () => {
  it('a 2 MiB .npy given with --input is refused at --max-input-mb 1 (inspect and plan)', async () => {
    const { mkdtempSync: mk } = await import('node:fs');
    const { tmpdir: td } = await import('node:os');
    const { join } = await import('node:path');
    const { writeNpy: wn } = await import('../../src/io/npy.js');
    const { runCli: run } = await import('../helpers/cli.js');
    const { REAL: R } = await import('../helpers/models.js');
    const dir = mk(join(td(), 'onnx-lr-maxin-'));
    const f = join(dir, 'x.npy');
    const w = wn(f, { dtype: 'f4', shape: [4, 3, 224, 192], data: new Float32Array(4 * 3 * 224 * 192) });
    if (!w.ok) throw w.error;
    const refused = await run('inspect', R.cls, '--input', `x:${f}`, '--max-input-mb', '1', '--no-profile');
    expect(refused.code).toBe(2);
    expect(refused.err).toMatch(/x\.npy.*over the 1 MiB input limit/);
    const plan = await run('plan', R.cls, '--input', `x:${f}`, '--max-input-mb', '1');
    expect(plan.code).toBe(2);
    expect(plan.err).toMatch(/x\.npy.*over the 1 MiB input limit/);
  });
});
