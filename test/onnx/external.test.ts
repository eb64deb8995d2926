import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { ExternalDataReader, checkLocation } from '../../src/onnx/external.js';
import { EXTERNAL_ALIGN, forEachTensor, loadModel, saveModel } from '../../src/onnx/file.js';
import { DataType, DATA_LOCATION_EXTERNAL, newTensor, type ModelProto, type StringStringEntryProto, type TensorProto } from '../../src/onnx/schema.js';
import { isExternal, readTensorFloat, tensorByteSize, tensorRawBytes } from '../../src/onnx/tensor.js';
import { nodeFs, type FsLike } from '../../src/util/fsio.js';
import {
  CLS, DEEPA, expectLrError, feedsFor, floatFeed, ifModel, listDir, matmulAddModel, removeTmpDirs, runOrt, sha, SILERO18, tmpDir,
} from './helpers.js';

afterAll(removeTmpDirs);

const entry = (t: TensorProto, key: string) => t.externalData.find((e) => e.key === key)?.value;

function initializers(m: ModelProto): TensorProto[] {
  const out: TensorProto[] = [];
  forEachTensor(m, (t, site) => { if (site === 'initializer') out.push(t); });
  return out;
}

async function expectSameOutputs(a: string, b: string, feeds: Record<string, ort.Tensor>): Promise<void> {
  const x = await runOrt(a, feeds);
  const y = await runOrt(b, feeds);
  expect(Object.keys(y)).toEqual(Object.keys(x));
  for (const k of Object.keys(x)) expect(Buffer.compare(Buffer.from(y[k]), Buffer.from(x[k])), k).toBe(0);
}

describe('converting real models to external data', () => {
  it.each([DEEPA, SILERO18, CLS].map((p) => [path.basename(p), p]))('%s: aligned external file, ORT bit-identical, back to inline byte-identical', async (_, p) => {
    const before = sha(fs.readFileSync(p));
    const dir = tmpDir();
    const out = path.join(dir, 'ext.onnx');
    const src = loadModel(p);
    const r = saveModel(src, out, { externalData: { threshold: 1024 } });

    const ext = loadModel(out);
    const big = initializers(src.model).filter((t) => tensorByteSize(t) >= 1024);
    const data = big.length > 0 ? fs.readFileSync(r.externalPath!) : Buffer.alloc(0);
    expect(r.externalTensors).toBe(big.length);
    const srcInits = initializers(src.model);
    const extInits = initializers(ext.model);
    expect(extInits.length).toBe(srcInits.length);
    extInits.forEach((t, i) => {
      expect(isExternal(t)).toBe(tensorByteSize(srcInits[i]) >= 1024);
      if (!isExternal(t)) return;
      const offset = Number(entry(t, 'offset'));
      expect(offset % EXTERNAL_ALIGN).toBe(0);
      expect(entry(t, 'location')).toMatch(/^ext\.onnx\.[0-9a-f]{12}\.data$/);
      expect(entry(t, 'location')).toBe(path.basename(r.externalPath!));
      expect(Number(entry(t, 'length'))).toBe(tensorByteSize(t));
      expect(t.rawData).toBeUndefined();
      expect(Buffer.compare(data.subarray(offset, offset + tensorByteSize(t)), Buffer.from(tensorRawBytes(srcInits[i])))).toBe(0);
      expect(readTensorFloat(t, ext.external)).toEqual(readTensorFloat(srcInits[i]));
    });
    if (big.length === 0) expect(listDir(dir)).toEqual(['ext.onnx']); // CLS: weights live in Constant nodes
    else expect(r.externalBytes).toBe(data.length);

    await expectSameOutputs(p, out, feedsFor(p, 3));

    const back = path.join(dir, 'inline.onnx');
    saveModel(ext, back);
    expect(Buffer.compare(fs.readFileSync(back), fs.readFileSync(p))).toBe(0);
    expect(sha(fs.readFileSync(p))).toBe(before);
    ext.external.close();
  });

  it('keeps Constant-node tensors inline and moves subgraph initializers (ORT runs both branches)', async () => {
    const dir = tmpDir();
    const inline = path.join(dir, 'if.onnx');
    const out = path.join(dir, 'if-ext.onnx');
    saveModel(ifModel(64, 32), inline);
    saveModel(loadModel(inline), out, { externalData: { threshold: 100 } });
    const m = loadModel(out).model;
    const branches = m.graph!.node[0].attribute.map((a) => a.g!);
    for (const g of branches) {
      expect(isExternal(g.initializer[0])).toBe(true);
      const c = g.node[0].attribute[0].t!;
      expect(tensorByteSize(c)).toBeGreaterThanOrEqual(100);
      expect(isExternal(c)).toBe(false);
    }
    for (const cond of [true, false]) {
      await expectSameOutputs(inline, out, { cond: new ort.Tensor('bool', [cond], []), X: floatFeed(5, [2, 64]) });
    }
  });

  it('uses a given location and threshold; external data of a loaded model can be inlined or re-homed', () => {
    const dir = tmpDir();
    const a = path.join(dir, 'a.onnx');
    saveModel(matmulAddModel(32, 16), a, { externalData: { location: 'weights.bin', threshold: 16 } });
    expect(listDir(dir)).toEqual(['a.onnx', 'weights.bin']);
    const la = loadModel(a);
    expect(initializers(la.model).map((t) => entry(t, 'location'))).toEqual(['weights.bin', 'weights.bin']);
    expect(Number(entry(la.model.graph!.initializer[1], 'offset'))).toBe(4096); // W is 2048 bytes: B pads to 4096
    // Into another folder: data is read from the source folder and written beside OUT.
    const other = tmpDir();
    const rb = saveModel(la, path.join(other, 'b.onnx'), { externalData: true });
    expect(listDir(other)).toEqual(['b.onnx', path.basename(rb.externalPath!)]);
    const lb = loadModel(path.join(other, 'b.onnx'));
    expect(readTensorFloat(lb.model.graph!.initializer[0], lb.external)).toEqual(readTensorFloat(la.model.graph!.initializer[0], la.external));
    // Option checks.
    expectLrError(() => saveModel(la, path.join(dir, 'c.onnx'), { externalData: { location: 'sub/w.bin' } }), 'usage', /plain file name/);
    expectLrError(() => saveModel(la, path.join(dir, 'c.onnx'), { externalData: { location: '../w.bin' } }), 'io', /escapes/);
    expectLrError(() => saveModel(la, path.join(dir, 'c.onnx'), { externalData: { location: 'c.onnx' } }), 'usage', /output file itself/);
    expectLrError(() => saveModel(la, path.join(dir, 'c.onnx'), { externalData: { threshold: NaN } }), 'usage', /threshold/);
    // Writing OUT's data over the input's data file would modify the input: refused.
    expectLrError(() => saveModel(la, path.join(dir, 'c.onnx'), { externalData: { location: 'weights.bin' } }), 'usage', /refusing/);
    expect(listDir(dir)).toEqual(['a.onnx', 'weights.bin']);
  });

  it('in-place save with force reads the old data before replacing it', () => {
    const dir = tmpDir();
    const a = path.join(dir, 'a.onnx');
    const model = matmulAddModel(32, 16);
    saveModel(model, a, { externalData: { threshold: 16 } });
    const la = loadModel(a);
    const w = readTensorFloat(la.model.graph!.initializer[0], la.external);
    const r = saveModel(la, a, { externalData: { threshold: 1 }, force: true });
    const again = loadModel(a);
    expect(readTensorFloat(again.model.graph!.initializer[0], again.external)).toEqual(w);
    // The replaced model's data file is removed once nothing refers to it.
    expect(listDir(dir)).toEqual(['a.onnx', path.basename(r.externalPath!)]);
  });

  it('goes external automatically when the inline protobuf would be too large, unless told not to', () => {
    const dir = tmpDir();
    const src = loadModel(DEEPA);
    const r = saveModel(src, path.join(dir, 'auto.onnx'), { autoExternalBytes: 100_000 });
    expect(r.externalTensors).toBeGreaterThan(0);
    expect(listDir(dir)).toEqual(['auto.onnx', path.basename(r.externalPath!)]);
    saveModel(src, path.join(dir, 'inline.onnx'), { autoExternalBytes: 100_000, externalData: false });
    expect(fs.statSync(path.join(dir, 'inline.onnx')).size).toBe(src.byteSize);
  });
});

describe('refusing bad external references', () => {
  /** Writes a model whose first initializer (W, 64 floats) points at `entries`. */
  function tampered(dir: string, entries: StringStringEntryProto[], dims = [8, 8]): string {
    const m = matmulAddModel(8, 8);
    const w = m.graph!.initializer[0];
    m.graph!.initializer[0] = { ...w, dims, rawData: undefined, externalData: entries, dataLocation: DATA_LOCATION_EXTERNAL };
    const f = path.join(dir, 'm.onnx');
    fs.writeFileSync(f, encodeModel(m));
    return f;
  }
  const loc = (location: string, offset = '0', length = '256'): StringStringEntryProto[] =>
    [{ key: 'location', value: location }, { key: 'offset', value: offset }, { key: 'length', value: length }];

  it('accepts a valid reference (the baseline for the refusals)', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'w.bin'), new Uint8Array(256));
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'sub', 'w.bin'), new Uint8Array(300));
    expect(loadModel(tampered(dir, loc('w.bin'))).model.graph!.initializer[0].name).toBe('W');
    expect(loadModel(tampered(dir, loc('sub/../sub/w.bin', '44'))).model.graph).toBeDefined();
    expect(loadModel(tampered(dir, [{ key: 'location', value: 'w.bin' }, { key: 'checksum', value: 'ignored' }])).model.graph).toBeDefined();
  });

  it.each([
    ['absolute path', '/etc/passwd', /absolute/],
    ['windows absolute path', 'C:\\weights.bin', /absolute/],
    ['parent folder', '../x.bin', /escapes the model folder/],
    ['hidden parent', 'a/../../x.bin', /escapes/],
    ['backslash parent', '..\\x.bin', /escapes/],
    ['empty', '', /empty/],
  ])('refuses a location: %s', (_, location, re) => {
    const dir = tmpDir();
    const e = expectLrError(() => loadModel(tampered(dir, loc(location))), 'io', re);
    expect(e.message).toContain('"W"');
    expect(e.message).toContain(`"${location}"`);
  });

  it('refuses symlinks (file or folder) that resolve outside the model folder', () => {
    const outside = tmpDir();
    fs.writeFileSync(path.join(outside, 'secret.bin'), new Uint8Array(256));
    const dir = tmpDir();
    fs.symlinkSync(path.join(outside, 'secret.bin'), path.join(dir, 'link.bin'));
    fs.symlinkSync(outside, path.join(dir, 'linkdir'));
    expectLrError(() => loadModel(tampered(dir, loc('link.bin'))), 'io', /"W".*"link\.bin" resolves outside the model folder/);
    expectLrError(() => loadModel(tampered(dir, loc('linkdir/secret.bin'))), 'io', /resolves outside/);
    // A symlink that stays inside is fine.
    fs.writeFileSync(path.join(dir, 'real.bin'), new Uint8Array(256));
    fs.symlinkSync('real.bin', path.join(dir, 'inside.bin'));
    expect(loadModel(tampered(dir, loc('inside.bin'))).model.graph).toBeDefined();
  });

  it('refuses missing files, folders, ranges past the end and lengths that disagree with dims', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'w.bin'), new Uint8Array(256));
    fs.mkdirSync(path.join(dir, 'sub'));
    expectLrError(() => loadModel(tampered(dir, loc('missing.bin'))), 'io', /"W".*"missing\.bin" does not exist/);
    expectLrError(() => loadModel(tampered(dir, loc('sub'))), 'io', /"sub" is not a regular file/);
    expectLrError(() => loadModel(tampered(dir, loc('w.bin', '4'))), 'parse', /"W".*4\+256 runs past the end of "w\.bin" \(256 bytes\)/);
    expectLrError(() => loadModel(tampered(dir, loc('w.bin', '0', '128'))), 'parse', /"W".*length 128 disagrees with dims \[8, 8\]/);
    expectLrError(() => loadModel(tampered(dir, loc('w.bin', '0', '256'), [8, 16])), 'parse', /disagrees/);
    expectLrError(() => loadModel(tampered(dir, loc('w.bin', '-1'))), 'parse', /offset "-1"/);
    expectLrError(() => loadModel(tampered(dir, loc('w.bin', '1e3'))), 'parse', /offset "1e3"/);
    expectLrError(() => loadModel(tampered(dir, [{ key: 'offset', value: '0' }])), 'parse', /"W".*no location/);
    // Without a length entry the size comes from dims, still bounds-checked.
    expectLrError(() => loadModel(tampered(dir, [{ key: 'location', value: 'w.bin' }, { key: 'offset', value: '8' }])), 'parse', /past the end/);
  });

  it('checkLocation normalises harmless paths', () => {
    expect(checkLocation('a/./b.bin', 't')).toBe('a/b.bin');
    expect(checkLocation('a\\b.bin', 't')).toBe('a/b.bin');
    expectLrError(() => checkLocation('a/', 't'), 'io', /not a file name/);
    expectLrError(() => checkLocation('x\0y', 't'), 'io', /NUL/);
  });
});

describe('ExternalDataReader', () => {
  const tensor = (location: string, offset: number, n: number): TensorProto => newTensor({
    name: 'T', dims: [n], dataType: DataType.FLOAT, dataLocation: DATA_LOCATION_EXTERNAL,
    externalData: [{ key: 'location', value: location }, { key: 'offset', value: String(offset) }, { key: 'length', value: String(n * 4) }],
  });

  it('caches one fd per file and releases them on close', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'w.bin'), new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer));
    let opens = 0, closes = 0;
    const counting: FsLike = { ...nodeFs, openSync: (p, f, m) => { opens++; return nodeFs.openSync(p, f, m); }, closeSync: (fd) => { closes++; nodeFs.closeSync(fd); } };
    const r = new ExternalDataReader(dir, counting);
    expect(readTensorFloat(tensor('w.bin', 0, 2), r)).toEqual(Float32Array.from([1, 2]));
    expect(readTensorFloat(tensor('w.bin', 8, 2), r)).toEqual(Float32Array.from([3, 4]));
    expect(readTensorFloat(tensor('./w.bin', 4, 3), r)).toEqual(Float32Array.from([2, 3, 4]));
    expect(opens).toBe(1);
    r.close();
    expect(closes).toBe(1);
    expect(readTensorFloat(tensor('w.bin', 12, 1), r)).toEqual(Float32Array.from([4])); // reopens on demand
    r.close();
  });

  it('reads past 2 GiB offsets of a (sparse) data file', () => {
    const dir = tmpDir();
    const f = path.join(dir, 'big.bin');
    const offset = 3 * 2 ** 30 + 4096; // 3 GiB: beyond int32 positions
    const fd = fs.openSync(f, 'w');
    fs.writeSync(fd, new Uint8Array(new Float32Array([7, 8, 9]).buffer), 0, 12, offset);
    fs.closeSync(fd);
    const r = new ExternalDataReader(dir);
    expect(readTensorFloat(tensor('big.bin', offset, 3), r)).toEqual(Float32Array.from([7, 8, 9]));
    expect(readTensorFloat(tensor('big.bin', 2 ** 31 + 8192, 2), r)).toEqual(Float32Array.from([0, 0]));
    expectLrError(() => r.readBytes(tensor('big.bin', offset + 4, 3)), 'parse', /past the end/);
    r.close();
  });

  it('reads STRING-free numeric types only and refuses non-external tensors', () => {
    const r = new ExternalDataReader(tmpDir());
    expectLrError(() => r.readBytes(newTensor({ name: 'x', dims: [1], dataType: DataType.FLOAT })), 'usage', /"x"/);
    expectLrError(() => r.readBytes({ ...tensor('w.bin', 0, 1), dataType: DataType.STRING }), 'unsupported', /STRING/);
  });
});

// Writes and re-reads > 2 GiB of external data (about 20 s and 2.9 GB of disk): opt in with LR_BIG_TESTS=1.
describe.skipIf(!process.env.LR_BIG_TESTS)('external data files over 2 GiB', () => {
  it('streams a 2.7 GiB data file and reads the tensor stored past 2 GiB', () => {
    const dir = tmpDir();
    const n = 136 * 2 ** 20; // 544 MiB of float32 per tensor; five tensors share one buffer
    const payload = new Float32Array(n);
    for (let i = 0; i < n; i += 4099) payload[i] = i;
    const raw = new Uint8Array(payload.buffer);
    const m = matmulAddModel(2, 2);
    m.graph!.initializer = ['A', 'B', 'C', 'D', 'E'].map((name) => newTensor({ name, dims: [n], dataType: DataType.FLOAT, rawData: raw }));
    const out = path.join(dir, 'big.onnx');
    const r = saveModel(m, out, { externalData: true });
    expect(r.externalBytes).toBeGreaterThan(2 ** 31);
    const back = loadModel(out);
    const last = back.model.graph!.initializer[4];
    expect(Number(entry(last, 'offset'))).toBeGreaterThan(2 ** 31);
    const got = back.external.readBytes(last);
    expect(Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.length), Buffer.from(raw))).toBe(0);
    back.external.close();
    fs.rmSync(dir, { recursive: true });
  });
});

it('decodeModel of an external-data model keeps the entries verbatim', () => {
  const dir = tmpDir();
  const f = path.join(dir, 'x.onnx');
  saveModel(matmulAddModel(32, 16), f, { externalData: { threshold: 16 } });
  const m = decodeModel(fs.readFileSync(f));
  expect(m.graph!.initializer[0].externalData.map((e) => e.key)).toEqual(['location', 'offset', 'length']);
  expect(m.graph!.initializer[0].dataLocation).toBe(DATA_LOCATION_EXTERNAL);
});
