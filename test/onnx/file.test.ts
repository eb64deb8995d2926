import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { forEachTensor, loadModel, mapTensors, saveModel } from '../../src/onnx/file.js';
import { newGraph, newModel } from '../../src/onnx/schema.js';
import { isExternal } from '../../src/onnx/tensor.js';
import { nodeFs, readFileChunked, type FsLike } from '../../src/util/fsio.js';
import { writeFileAtomic } from '../../src/util/temp-files.js';
// A pass-through spy on the model reader: shows whether a file was read at all.
vi.mock('../../src/util/fsio.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/util/fsio.js')>();
  return { ...m, readFileChunked: vi.fn(m.readFileChunked) };
});
import { CLS, DEEPA, expectLrError, feedsFor, listDir, matmulAddModel, REAL_MODELS, removeTmpDirs, runOrt, sha, tmpDir } from './helpers.js';

afterAll(removeTmpDirs);

/** An fs whose writes fail with ENOSPC once `limit` bytes have been written in total. */
function fullDisk(limit: number): FsLike & { written: number } {
  const f = {
    ...nodeFs,
    written: 0,
    writeSync(fd: number, b: Uint8Array, off: number, len: number, pos: number | null): number {
      if (f.written + len > limit) {
        // Write what fits, then fail like a full disk would.
        const fits = limit - f.written;
        if (fits > 0) { nodeFs.writeSync(fd, b, off, fits, pos); f.written += fits; return fits; }
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      }
      f.written += len;
      return nodeFs.writeSync(fd, b, off, len, pos);
    },
  };
  return f;
}

describe('loadModel', () => {
  it('loads a real model with its folder, size and an external reader', () => {
    const m = loadModel(DEEPA);
    expect(m.path).toBe(path.resolve(DEEPA));
    expect(m.dir).toBe(path.dirname(path.resolve(DEEPA)));
    expect(m.byteSize).toBe(fs.statSync(DEEPA).size);
    expect(m.model.graph!.initializer.length).toBeGreaterThan(0);
    m.external.close();
  });

  it('gives clear errors for missing, directory, empty, non-protobuf, graphless and too-new files', () => {
    const dir = tmpDir();
    expectLrError(() => loadModel(path.join(dir, 'nope.onnx')), 'io', /no such file: .*nope\.onnx/);
    expectLrError(() => loadModel(dir), 'io', /directory/);
    const write = (name: string, b: Uint8Array | string) => { const f = path.join(dir, name); fs.writeFileSync(f, b); return f; };
    expectLrError(() => loadModel(write('empty.onnx', '')), 'parse', /empty\.onnx is empty/);
    expectLrError(() => loadModel(write('png.onnx', new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]))), 'parse', /png\.onnx/);
    expectLrError(() => loadModel(write('text.onnx', 'hello, this is not a model\n')), 'parse', /text\.onnx/);
    expectLrError(() => loadModel(write('nograph.onnx', encodeModel(newModel({ irVersion: 8, opsetImport: [{ domain: '', version: 13 }] })))), 'parse', /no graph/);
    expectLrError(() => loadModel(write('noopset.onnx', encodeModel(newModel({ irVersion: 8, graph: newGraph() })))), 'parse', /opset_import/);
    expectLrError(() => loadModel(write('ir14.onnx', encodeModel({ ...matmulAddModel(2, 2), irVersion: 14 }))), 'unsupported', /IR version 14/);
    expect(loadModel(write('ir13.onnx', encodeModel({ ...matmulAddModel(2, 2), irVersion: 13 }))).model.irVersion).toBe(13);
  });

  it('refuses a file over 2 GiB before reading it', () => {
    const f = path.join(tmpDir(), 'huge.onnx');
    fs.writeFileSync(f, '');
    fs.truncateSync(f, 2 ** 31 + 5); // sparse: costs no disk
    // Refused from its size alone: the reader is never called (not a timing, which a
    // loaded machine skews).
    vi.mocked(readFileChunked).mockClear();
    expectLrError(() => loadModel(f), 'unsupported', new RegExp(`huge\\.onnx is ${2 ** 31 + 5} bytes: .*2 GiB`));
    expect(readFileChunked).not.toHaveBeenCalled();
    // The spy does see a model being read.
    loadModel(CLS).external.close();
    expect(readFileChunked).toHaveBeenCalled();
  });
});

describe('saveModel', () => {
  it.each(REAL_MODELS.map((p) => [path.basename(p), p]))('%s: load → save is byte-identical and leaves the input alone', (_, p) => {
    const before = sha(fs.readFileSync(p));
    const dir = tmpDir();
    const m = loadModel(p);
    const r = saveModel(m, path.join(dir, 'out.onnx'));
    expect(r.externalTensors).toBe(0);
    expect(Buffer.compare(fs.readFileSync(r.path), fs.readFileSync(p))).toBe(0);
    expect(sha(fs.readFileSync(p))).toBe(before);
    expect(listDir(dir)).toEqual(['out.onnx']);
  });

  it.each([DEEPA, CLS].map((p) => [path.basename(p), p]))('ORT gives bit-identical outputs for the saved %s', async (_, p) => {
    const out = path.join(tmpDir(), 'out.onnx');
    saveModel(loadModel(p), out);
    for (const seed of [1, 2]) {
      const a = await runOrt(p, feedsFor(p, seed));
      const b = await runOrt(out, feedsFor(p, seed));
      expect(Object.keys(a).length).toBeGreaterThan(0);
      for (const k of Object.keys(a)) expect(Buffer.compare(Buffer.from(b[k]), Buffer.from(a[k])), k).toBe(0);
    }
  });

  it('saves an in-memory model and does not mutate it', () => {
    const model = matmulAddModel(8, 4);
    const snapshot = encodeModel(model);
    const out = path.join(tmpDir(), 'm.onnx');
    saveModel(model, out, { externalData: { threshold: 64 } });
    expect(Buffer.compare(Buffer.from(encodeModel(model)), Buffer.from(snapshot))).toBe(0);
    const back = loadModel(out);
    expect(back.model.graph!.initializer.filter(isExternal).map((t) => t.name)).toEqual(['W']);
  });

  it('refuses to overwrite the input (also through a symlink) unless forced', () => {
    const dir = tmpDir();
    const inp = path.join(dir, 'in.onnx');
    fs.copyFileSync(DEEPA, inp);
    const m = loadModel(inp);
    expectLrError(() => saveModel(m, inp), 'usage', /refusing to overwrite/);
    fs.symlinkSync(inp, path.join(dir, 'alias.onnx'));
    expectLrError(() => saveModel(m, path.join(dir, 'alias.onnx')), 'usage', /refusing/);
    expectLrError(() => saveModel(m, path.join(dir, 'sub', '..', 'in.onnx')), 'usage', /refusing/);
    const r = saveModel(m, inp, { force: true });
    expect(Buffer.compare(fs.readFileSync(r.path), fs.readFileSync(DEEPA))).toBe(0);
    expect(listDir(dir)).toEqual(['alias.onnx', 'in.onnx']);
  });

  it('refuses a directory as OUT and a missing output folder', () => {
    const dir = tmpDir();
    const m = loadModel(DEEPA);
    expectLrError(() => saveModel(m, dir), 'io', /directory/);
    expectLrError(() => saveModel(m, path.join(dir, 'no', 'x.onnx')), 'io', /no such folder/);
  });

  it('needs a reader for tensors that are still external', () => {
    const dir = tmpDir();
    const ext = path.join(dir, 'ext.onnx');
    const saved = saveModel(loadModel(DEEPA), ext, { externalData: true });
    const loaded = loadModel(ext);
    expectLrError(() => saveModel(loaded.model, path.join(dir, 'inline.onnx')), 'usage', /external/);
    expect(listDir(dir)).toEqual(['ext.onnx', path.basename(saved.externalPath!)]);
  });
});

describe('atomic writes', () => {
  it.each([[0], [1], [4096], [100_000], [fs.statSync(DEEPA).size - 1]])('a full disk after %i bytes leaves no OUT and no temp file', (limit) => {
    const dir = tmpDir();
    const e = expectLrError(() => saveModel(loadModel(DEEPA), path.join(dir, 'out.onnx'), { fs: fullDisk(limit) }), 'io', /ENOSPC/);
    expect(e.message).toContain('out.onnx');
    expect(listDir(dir)).toEqual([]);
  });

  it('a full disk leaves an existing OUT and its data file untouched (inline and external)', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'out.onnx');
    fs.writeFileSync(out, 'previous model');
    fs.writeFileSync(`${out}.data`, 'previous data');
    const m = loadModel(DEEPA);
    // Sizes from a successful save elsewhere, to fail inside the data file and inside the model.
    const probe = saveModel(m, path.join(tmpDir(), 'out.onnx'), { externalData: true }); // same name: same location strings
    const data = probe.externalBytes!;
    const cases: [number, false | { threshold: number }][] = [
      [10, false], [m.byteSize >> 1, false], [m.byteSize - 1, false],
      [10, { threshold: 1024 }], [data >> 1, { threshold: 1024 }], [data + 10, { threshold: 1024 }], [data + probe.bytes - 1, { threshold: 1024 }],
    ];
    for (const [limit, externalData] of cases) {
      expectLrError(() => saveModel(m, out, { externalData, fs: fullDisk(limit) }), 'io', /ENOSPC/);
      expect(fs.readFileSync(out, 'utf8')).toBe('previous model');
      expect(fs.readFileSync(`${out}.data`, 'utf8')).toBe('previous data');
      expect(listDir(dir)).toEqual(['out.onnx', 'out.onnx.data']);
    }
  });

  it('a failed rename of the model puts the previous data file back', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'out.onnx');
    fs.writeFileSync(out, 'previous model');
    fs.writeFileSync(`${out}.data`, 'previous data');
    const failing: FsLike = {
      ...nodeFs,
      renameSync(from, to) {
        if (to === out) throw Object.assign(new Error('EIO: simulated'), { code: 'EIO' });
        nodeFs.renameSync(from, to);
      },
    };
    expectLrError(() => saveModel(loadModel(DEEPA), out, { externalData: true, fs: failing }), 'io', /EIO/);
    expect(fs.readFileSync(out, 'utf8')).toBe('previous model');
    expect(fs.readFileSync(`${out}.data`, 'utf8')).toBe('previous data');
    expect(listDir(dir)).toEqual(['out.onnx', 'out.onnx.data']);
    // Without a previous data file, the new one is removed again.
    fs.unlinkSync(`${out}.data`);
    expectLrError(() => saveModel(loadModel(DEEPA), out, { externalData: true, fs: failing }), 'io', /EIO/);
    expect(listDir(dir)).toEqual(['out.onnx']);
  });

  it('writeFileAtomic writes parts or a producer, and cleans up when the producer throws', () => {
    const dir = tmpDir();
    const f = path.join(dir, 'a.bin');
    expect(writeFileAtomic(f, [new Uint8Array([1, 2]), new Uint8Array([3])])).toBe(3);
    expect(Array.from(fs.readFileSync(f))).toEqual([1, 2, 3]);
    expect(writeFileAtomic(f, (write) => { for (let i = 0; i < 5; i++) write(new Uint8Array([i])); })).toBe(5);
    expect(Array.from(fs.readFileSync(f))).toEqual([0, 1, 2, 3, 4]);
    expect(() => writeFileAtomic(f, (write) => { write(new Uint8Array(10)); throw new Error('producer failed'); })).toThrow('producer failed');
    expect(Array.from(fs.readFileSync(f))).toEqual([0, 1, 2, 3, 4]);
    expectLrError(() => writeFileAtomic(f, [new Uint8Array(100)], { fs: fullDisk(50) }), 'io', /ENOSPC/);
    expect(listDir(dir)).toEqual(['a.bin']);
    // A short write (writeSync returning less than asked) is retried, not lost.
    const halting: FsLike = { ...nodeFs, writeSync: (fd, b, off, len, pos) => nodeFs.writeSync(fd, b, off, Math.min(len, 7), pos) };
    const data = new Uint8Array(100).map((_, i) => i);
    writeFileAtomic(f, [data], { fs: halting });
    expect(Buffer.compare(fs.readFileSync(f), Buffer.from(data))).toBe(0);
  });
});

describe('tensor walking', () => {
  it('visits initializers at every depth and rebuilds only changed paths', () => {
    const m = loadModel(DEEPA).model;
    const sites: string[] = [];
    forEachTensor(m, (_, site) => sites.push(site));
    expect(sites.filter((s) => s === 'initializer').length).toBe(m.graph!.initializer.length);
    expect(mapTensors(m, (t) => t)).toBe(m);
    const renamed = mapTensors(m, (t, site) => (site === 'initializer' ? { ...t, name: `${t.name}_x` } : t));
    expect(renamed).not.toBe(m);
    expect(renamed.graph!.node).toBe(m.graph!.node);
    expect(renamed.graph!.initializer[0].name).toBe(`${m.graph!.initializer[0].name}_x`);
    expect(m.graph!.initializer[0].name).not.toMatch(/_x$/);
    expect(decodeModel(encodeModel(renamed)).graph!.initializer[0].name).toMatch(/_x$/);
  });
});
