/**
 * Issue 16, writing outputs (src/onnx/file.ts, src/util/fsio.ts, src/util/output-paths.ts):
 * OUT may not replace any file the input reads; outputs are regular files or absent; the
 * external data file is named by its content so that a model file only ever names the
 * data written with it (also when the writer is killed between the renames, or two
 * writers race); temp names are short, removed on SIGINT/SIGTERM, and stale ones of dead
 * processes are removed by the next write.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { dataFileName, forEachTensor, loadModel, prepareSave, removeLeftovers, saveModel } from '../../src/onnx/file.js';
import { isExternal } from '../../src/onnx/tensor.js';
import { removeStaleTemps, removeStaleWorkDirs, TempFile } from '../../src/util/temp-files.js';
import { expectLrError, floatFeed, listDir, matmulAddModel, removeTmpDirs, runOrt, sha, tmpDir } from './helpers.js';

afterAll(removeTmpDirs);

const SRC = path.resolve('src');
const feeds = { X: floatFeed(3, [2, 32]) };
const locations = (file: string): string[] => {
  const out = new Set<string>();
  forEachTensor(loadModel(file).model, (t) => { if (isExternal(t)) out.add(t.externalData.find((e) => e.key === 'location')!.value!); });
  return [...out];
};

/** A model whose weight W lives in `w.bin` beside it. */
function modelWithDataFile(dir: string): string {
  const f = path.join(dir, 'model.onnx');
  saveModel(matmulAddModel(32, 16), f, { externalData: { location: 'w.bin', threshold: 1024 } });
  return f;
}

/** Runs a module body in a separate Node process (TypeScript through tsx); resolves when it exits. */
function child(body: string, opts: { onLine?: (line: string, kill: (s: NodeJS.Signals) => void) => void } = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', body], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      for (const line of b.toString().split('\n')) if (line) opts.onLine?.(line, (s) => p.kill(s));
    });
    p.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    p.on('exit', (code, signal) => resolve({ code, signal, out, err }));
  });
}

describe('OUT may not replace a file the input reads', () => {
  it('OUT naming the input\'s external data file is refused even when the saved model no longer uses it, also with force', () => {
    const dir = tmpDir();
    const m = loadModel(modelWithDataFile(dir));
    const before = sha(fs.readFileSync(path.join(dir, 'w.bin')));
    // As after a rewrite: the model saved no longer refers to w.bin.
    const rewritten = { ...m, model: matmulAddModel(32, 16, 9) };
    for (const force of [false, true]) {
      expectLrError(() => saveModel(rewritten, path.join(dir, 'w.bin'), { force }), 'usage', /w\.bin/);
      expectLrError(() => saveModel(rewritten, path.join(dir, 'w.bin'), { force, externalData: true }), 'usage', /w\.bin/);
    }
    expect(sha(fs.readFileSync(path.join(dir, 'w.bin')))).toBe(before);
    expect(listDir(dir)).toEqual(['model.onnx', 'w.bin']);
    m.external.close();
  });

  it('a hard link to the input (same inode, another name) is the input', () => {
    const dir = tmpDir();
    const f = modelWithDataFile(dir);
    fs.linkSync(path.join(dir, 'w.bin'), path.join(dir, 'alias.bin'));
    fs.linkSync(f, path.join(dir, 'alias.onnx'));
    const m = loadModel(f);
    expectLrError(() => saveModel(m, path.join(dir, 'alias.bin')), 'usage', /refusing to overwrite/);
    expectLrError(() => saveModel(m, path.join(dir, 'alias.onnx')), 'usage', /refusing to overwrite the input file/);
    expect(listDir(dir)).toEqual(['alias.bin', 'alias.onnx', 'model.onnx', 'w.bin']);
    m.external.close();
  });

  it('another output (a report) may not be OUT or an input', () => {
    const dir = tmpDir();
    const f = modelWithDataFile(dir);
    const m = loadModel(f);
    const out = path.join(dir, 'out.onnx');
    expectLrError(() => saveModel(m, out, { otherOutputs: [{ path: out, label: '--report' }] }), 'usage', /same file as OUT/);
    expectLrError(() => saveModel(m, out, { force: true, otherOutputs: [{ path: path.join(dir, 'w.bin'), label: '--report' }] }), 'usage', /--report/);
    expect(listDir(dir)).toEqual(['model.onnx', 'w.bin']);
    m.external.close();
  });
});

describe('outputs must be regular files or absent', () => {
  const m = matmulAddModel(8, 4);

  it('a device, a FIFO, or a link to one is refused, not replaced (and the FIFO is not opened)', () => {
    const dir = tmpDir();
    const fifo = path.join(dir, 'pipe.onnx');
    execFileSync('mkfifo', [fifo]);
    // A device node of our own (as root, like /dev/null): a broken build replaces only it.
    const dev = path.join(dir, 'null-device');
    execFileSync('mknod', ['-m', '666', dev, 'c', '1', '3']);
    fs.symlinkSync('/dev/null', path.join(dir, 'null.onnx'));
    fs.symlinkSync(fifo, path.join(dir, 'to-fifo.onnx'));
    expectLrError(() => saveModel(m, dev), 'usage', /null-device is a character device/);
    expectLrError(() => saveModel(m, fifo), 'usage', /is a FIFO/);
    expectLrError(() => saveModel(m, path.join(dir, 'null.onnx')), 'usage', /link to a character device/);
    expectLrError(() => saveModel(m, path.join(dir, 'to-fifo.onnx')), 'usage', /link to a FIFO, not a regular file/);
    expect(fs.statSync(dev).isCharacterDevice()).toBe(true);
    expect(fs.lstatSync(fifo).isFIFO()).toBe(true);
    expect(fs.lstatSync(path.join(dir, 'null.onnx')).isSymbolicLink()).toBe(true);
    expect(listDir(dir)).toEqual(['null-device', 'null.onnx', 'pipe.onnx', 'to-fifo.onnx']);
  });

  it('a link to a regular file is replaced by the new file; its target is left as it was', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'target'), 'keep me');
    fs.symlinkSync(path.join(dir, 'target'), path.join(dir, 'link.onnx'));
    saveModel(m, path.join(dir, 'link.onnx'));
    expect(fs.lstatSync(path.join(dir, 'link.onnx')).isFile()).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'target'), 'utf8')).toBe('keep me');
  });
});

describe('external data named by its content', () => {
  it('OUT names OUT.<hash>.data; saving other weights over it leaves one consistent pair, the same weights the same name', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'out.onnx');
    const a = saveModel(matmulAddModel(32, 16, 1), out, { externalData: true });
    expect(path.basename(a.externalPath!)).toMatch(/^out\.onnx\.[0-9a-f]{12}\.data$/);
    expect(locations(out)).toEqual([path.basename(a.externalPath!)]);
    const yA = await runOrt(out, feeds);
    const b = saveModel(matmulAddModel(32, 16, 2), out, { externalData: true });
    expect(b.externalPath).not.toBe(a.externalPath);
    expect(listDir(dir)).toEqual(['out.onnx', path.basename(b.externalPath!)]); // the previous data file is gone
    // Same weights again: the same name, and the pair still loads.
    const a2 = saveModel(matmulAddModel(32, 16, 1), out, { externalData: true });
    expect(a2.externalPath).toBe(a.externalPath);
    expect(listDir(dir)).toEqual(['out.onnx', path.basename(a.externalPath!)]);
    expect(await runOrt(out, feeds)).toEqual(yA);
  });

  it('killed (SIGKILL) between placing the new data and renaming the model: the old OUT still loads its own weights', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'out.onnx');
    saveModel(matmulAddModel(32, 16, 1), out, { externalData: true });
    const yOld = await runOrt(out, feeds);
    const r = await child(`
      import { saveModel } from '${SRC}/onnx/file.ts';
      import { nodeFs } from '${SRC}/util/fsio.ts';
      import { matmulAddModel } from '${path.resolve('test/onnx/helpers.ts')}';
      const fs = { ...nodeFs, renameSync(a, b) { if (b === ${JSON.stringify(out)}) process.kill(process.pid, 'SIGKILL'); nodeFs.renameSync(a, b); } };
      saveModel(matmulAddModel(32, 16, 2), ${JSON.stringify(out)}, { externalData: true, fs });
    `);
    expect(r.signal).toBe('SIGKILL');
    expect(await runOrt(out, feeds)).toEqual(yOld);
    // Left behind: the dead writer's temps and its data file, which nothing names. The next
    // write removes them all, and only them.
    expect(listDir(dir).length).toBeGreaterThan(2);
    const next = saveModel(matmulAddModel(32, 16, 3), out, { externalData: true });
    expect(listDir(dir)).toEqual(['out.onnx', path.basename(next.externalPath!)]);
  });

  it('removeLeftovers clears what a killed first write of OUT left (for a supervisor whose worker died)', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'new.onnx');
    const r = await child(`
      import { saveModel } from '${SRC}/onnx/file.ts';
      import { nodeFs } from '${SRC}/util/fsio.ts';
      import { matmulAddModel } from '${path.resolve('test/onnx/helpers.ts')}';
      const fs = { ...nodeFs, renameSync(a, b) { if (b === ${JSON.stringify(out)}) process.kill(process.pid, 'SIGKILL'); nodeFs.renameSync(a, b); } };
      saveModel(matmulAddModel(32, 16, 2), ${JSON.stringify(out)}, { externalData: true, fs });
    `);
    expect(r.signal).toBe('SIGKILL');
    expect(listDir(dir).some((n) => /^new\.onnx\.[0-9a-f]{12}\.data$/.test(n))).toBe(true);
    fs.writeFileSync(path.join(dir, 'other.onnx.0123456789ab.data'), 'not ours');
    removeLeftovers(out);
    expect(listDir(dir)).toEqual(['other.onnx.0123456789ab.data']);
  });

  it('a writer in flight keeps its data file from being taken for an orphan by another writer', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'out.onnx');
    const inFlight = prepareSave(matmulAddModel(32, 16, 2), out, { externalData: true });
    saveModel(matmulAddModel(32, 16, 1), out, { externalData: true });
    expect(fs.existsSync(inFlight.result.externalPath!)).toBe(true);
    const y2 = await runOrt(inFlight.tempPath, feeds);
    inFlight.commit();
    expect(await runOrt(out, feeds)).toEqual(y2);
    expect(listDir(dir)).toEqual(['out.onnx', path.basename(inFlight.result.externalPath!)]);
  });

  it('a prepared save: the temp model loads as OUT will; discard leaves everything as it was; two racing saves each commit a consistent pair', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'out.onnx');
    saveModel(matmulAddModel(32, 16, 1), out, { externalData: true });
    const before = listDir(dir);
    const y1 = await runOrt(out, feeds);
    const p2 = prepareSave(matmulAddModel(32, 16, 2), out, { externalData: true });
    const p3 = prepareSave(matmulAddModel(32, 16, 3), out, { externalData: true });
    const y2 = await runOrt(p2.tempPath, feeds);
    const y3 = await runOrt(p3.tempPath, feeds);
    expect(y2).not.toEqual(y1);
    expect(await runOrt(out, feeds)).toEqual(y1); // in flight: OUT is still the old pair
    p3.discard();
    expect(await runOrt(p2.tempPath, feeds)).toEqual(y2);
    p2.commit();
    expect(await runOrt(out, feeds)).toEqual(y2);
    expect(listDir(dir)).toEqual(['out.onnx', path.basename(p2.result.externalPath!)]);
    // Racing: both prepared, committed in either order; the last commit wins, consistent.
    const q3 = prepareSave(matmulAddModel(32, 16, 3), out, { externalData: true });
    const q1 = prepareSave(matmulAddModel(32, 16, 1), out, { externalData: true });
    q1.commit();
    expect(await runOrt(out, feeds)).toEqual(y1);
    q3.commit();
    expect(await runOrt(out, feeds)).toEqual(y3);
    expect(locations(out)).toEqual([path.basename(q3.result.externalPath!)]);
    expect(before.length).toBe(2);
  });

  it('1-D integer tensors past 1024 bytes (a 130-element Reshape shape) stay inline, so ORT loads the external model', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('X', [2, 32]);
    const y = b.node('MatMul', [x, b.init('W', [32, 16], Array.from({ length: 512 }, (_, i) => Math.sin(i)))]);
    b.output(b.node('Reshape', [y, b.initInt64('S', [130], [2, 16, ...Array<number>(128).fill(1)])]));
    const dir = tmpDir();
    const out = path.join(dir, 'r.onnx');
    const r = saveModel(b.build(), out, { externalData: { threshold: 0 } });
    expect(r.externalTensors).toBe(1);
    expect((await runOrt(out, feeds)).reshape_1_out0.length).toBe(2 * 16 * 4);
  });
});

describe('temp files', () => {
  it('are short, so an OUT name of 255 bytes works (inline and with external data)', () => {
    const dir = tmpDir();
    const out = path.join(dir, `${'m'.repeat(250)}.onnx`);
    saveModel(matmulAddModel(32, 16), out);
    const r = saveModel(matmulAddModel(32, 16), out, { externalData: true });
    expect(Buffer.byteLength(path.basename(r.externalPath!))).toBeLessThanOrEqual(255);
    expect(dataFileName(path.basename(out), '0123456789ab')).toMatch(/^m+\.0123456789ab\.data$/);
    expect(listDir(dir)).toEqual([path.basename(out), path.basename(r.externalPath!)].sort());
    expect(loadModel(out).dataFiles).toEqual([r.externalPath]);
  });

  it('stale temps of dead processes (this naming and the old one) are removed by the next write; those of live processes stay', () => {
    const dir = tmpDir();
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    const stale = [`.onnx-lr-${dead}-0.tmp`, `.onnx-lr-${dead}-1.tmp.bak`, `.out.onnx.tmp-${dead}-0`];
    const kept = [`.onnx-lr-${process.pid}-7.tmp`, '.onnx-lr-1-0.tmp', 'notes.tmp'];
    for (const f of [...stale, ...kept]) fs.writeFileSync(path.join(dir, f), 'x');
    saveModel(matmulAddModel(8, 4), path.join(dir, 'out.onnx'));
    expect(listDir(dir)).toEqual([...kept, 'out.onnx'].sort());
    expect(removeStaleTemps(dir)).toEqual([]);
  });

  it.each(['SIGINT', 'SIGTERM'] as const)('are removed when the process gets %s, which still ends it (a shell reports 130/143)', async (sig) => {
    const dir = tmpDir();
    const r = await child(`
      import { TempFile } from '${SRC}/util/temp-files.ts';
      const t = new TempFile(${JSON.stringify(path.join(dir, 'out.onnx'))});
      t.write(new Uint8Array(1000));
      console.log('ready');
      setInterval(() => {}, 1000);
    `, { onLine: (line, kill) => { if (line === 'ready') kill(sig); } });
    expect(r.signal).toBe(sig);
    expect(listDir(dir)).toEqual([]);
  });

  it('are removed at exit too, and a committed file is not', () => {
    const dir = tmpDir();
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
      import { TempFile, writeFileAtomic } from '${SRC}/util/temp-files.ts';
      writeFileAtomic(${JSON.stringify(path.join(dir, 'kept.json'))}, [new Uint8Array(3)]);
      new TempFile(${JSON.stringify(path.join(dir, 'out.onnx'))}).write(new Uint8Array(10));
      process.exit(3);
    `]);
    expect(r.status).toBe(3);
    expect(listDir(dir)).toEqual(['kept.json']);
    expect(TempFile).toBeDefined();
  });
});

describe('working folders (a run\'s model copy in the temp folder)', () => {
  /** A child that makes a working folder in `dir` (its TMPDIR), writes into it and waits. */
  const worker = (dir: string) => `
    import { writeFileSync } from 'node:fs';
    import path from 'node:path';
    import { makeWorkDir } from '${SRC}/util/temp-files.ts';
    const w = makeWorkDir();
    if (path.dirname(w.dir) !== ${JSON.stringify(dir)}) throw new Error('not in TMPDIR: ' + w.dir);
    writeFileSync(path.join(w.dir, 'in.f32.onnx'), new Uint8Array(1000));
    console.log('ready');
    setInterval(() => {}, 1000);
  `;
  const run = (dir: string, sig: NodeJS.Signals) => new Promise<NodeJS.Signals | null>((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', worker(dir)], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, TMPDIR: dir } });
    p.stdout.on('data', (b: Buffer) => { if (b.toString().includes('ready')) p.kill(sig); });
    p.on('close', (_code, signal) => resolve(signal));
  });

  it('are removed on SIGTERM by the process itself; after a SIGKILL by the next cleanup, which leaves live processes\' folders and look-alike files alone', async () => {
    const dir = tmpDir();
    // (tsx keeps its cache in TMPDIR too.)
    const work = (): string[] => listDir(dir).filter((f) => f.startsWith('onnx-lr-work-'));
    expect(await run(dir, 'SIGTERM')).toBe('SIGTERM');
    expect(work()).toEqual([]);
    expect(await run(dir, 'SIGKILL')).toBe('SIGKILL');
    const left = work();
    expect(left).toHaveLength(1);
    // onnx-lr-work-<host>-<pid>-XXXXXX: <host> a hash of this machine's name.
    const m = /^onnx-lr-work-([0-9a-f]{8})-(\d+)-[A-Za-z0-9]{6}$/.exec(left[0]!);
    expect(m).not.toBeNull();
    const host = m![1]!;
    const other = host === '00000000' ? '11111111' : '00000000';
    // Kept: a live process's folder (the parent of this test process), another machine's
    // folder of a pid dead here, a file and a link with such names.
    const live = `onnx-lr-work-${host}-${process.ppid}-abcdef`;
    const foreign = `onnx-lr-work-${other}-${m![2]}-stuvwx`;
    const file = `onnx-lr-work-${host}-999999999-ghijkl`;
    const link = `onnx-lr-work-${host}-999999998-mnopqr`;
    fs.mkdirSync(path.join(dir, live));
    fs.mkdirSync(path.join(dir, foreign));
    fs.writeFileSync(path.join(dir, file), 'x');
    fs.symlinkSync(path.join(dir, live), path.join(dir, link));
    // Another user's folder of a dead pid stays too (made only as root, which chown needs; CI runs as root).
    const theirs = `onnx-lr-work-${host}-999999996-tuvwxy`;
    if (process.getuid?.() === 0) {
      fs.mkdirSync(path.join(dir, theirs));
      fs.chownSync(path.join(dir, theirs), 65534, 65534);
    }
    // Asked for another pid's only: nothing goes.
    expect(removeStaleWorkDirs(dir, 999999997)).toEqual([]);
    expect(removeStaleWorkDirs(dir, Number(m![2]))).toEqual(left);
    expect(removeStaleWorkDirs(dir)).toEqual([]);
    expect(work()).toEqual([live, foreign, file, link, ...(process.getuid?.() === 0 ? [theirs] : [])].sort());
  });
});
