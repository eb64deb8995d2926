/**
 * Codec properties the file layer relies on: byte-identical round trips of real and
 * synthetic models (IR 10+ fields, unknown fields), int64 extremes, packed/unpacked
 * payloads, and parse errors (never another exception type) on damaged input.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LrError } from '../../src/errors.js';
import { decodeAs, decodeModel, encodeAs, encodeModel } from '../../src/onnx/codec.js';
import { loadModel } from '../../src/onnx/file.js';
import {
  AttributeType, DataType, newAttribute, newGraph, newModel, newNode, newTensor, newValueInfo,
  type ModelProto, type NodeProto, type TensorProto,
} from '../../src/onnx/schema.js';
import { readTensorFloat, readTensorInt64 } from '../../src/onnx/tensor.js';
import { Reader, Writer } from '../../src/onnx/wire.js';
import { createRng } from '../../src/util/rng.js';
import { DEEPA, expectLrError, floatInfo, matmulAddModel, REAL_MODELS, removeTmpDirs, tmpDir } from './helpers.js';

afterAll(removeTmpDirs);

const INT64_MAX = 0x7fffffffffffffffn;
const INT64_MIN = -0x8000000000000000n;

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** Hand-written unknown fields: 999 as a varint, 1000 length-delimited. */
function unknownFields(seed: number): Uint8Array {
  const w = new Writer();
  w.tag(999, 0);
  w.int64(BigInt(seed) * 1000003n);
  w.lenBytes(1000, new TextEncoder().encode(`future-${seed}`));
  return concat(...w.finish());
}

/** Encodes a message, appends unknown fields, decodes it back: the unknowns must be captured. */
function withUnknown<T extends object>(kind: 'NodeProto' | 'TensorProto', msg: T, seed: number): T {
  const extra = unknownFields(seed);
  const bytes = concat(encodeAs(kind, msg), extra);
  const back = decodeAs<T & { unknown?: Uint8Array[] }>(kind, bytes);
  expect(back.unknown?.map((u) => Array.from(u)).flat()).toEqual(Array.from(extra));
  return back;
}

function ir10Model(): ModelProto {
  const base = matmulAddModel(4, 3);
  const g = base.graph!;
  const meta = (k: string) => [{ key: k, value: `v-${k}` }];
  const node: NodeProto = withUnknown('NodeProto', newNode({
    opType: 'MatMul', name: 'mm', input: ['X', 'W'], output: ['XW'], overload: 'ov1', metadataProps: meta('node'), docString: 'a node',
  }), 1);
  const w: TensorProto = withUnknown('TensorProto', { ...g.initializer[0], metadataProps: meta('tensor') }, 2);
  const fnAttr = newAttribute({ name: 'alpha', type: AttributeType.FLOAT, f: 0.5 });
  return newModel({
    irVersion: 11,
    opsetImport: [{ domain: '', version: 21 }, { domain: 'custom', version: 1 }],
    producerName: 'onnx-lr-test', producerVersion: '0', domain: 'test', modelVersion: INT64_MAX, docString: 'doc',
    metadataProps: meta('model'),
    graph: newGraph({
      ...g,
      node: [node, g.node[1]],
      initializer: [w, g.initializer[1]],
      sparseInitializer: [{
        dims: [3, 3],
        values: newTensor({ name: 'S', dims: [2], dataType: DataType.FLOAT, floatData: Float32Array.from([1, 2]) }),
        indices: newTensor({ name: 'S_idx', dims: [2], dataType: DataType.INT64, int64Data: BigInt64Array.from([0n, 8n]) }),
      }],
      valueInfo: [{ ...floatInfo('XW', [2, 3]), metadataProps: meta('vi') }],
      metadataProps: meta('graph'),
      quantizationAnnotation: [{ tensorName: 'W', quantParameterTensorNames: meta('q') }],
    }),
    functions: [{
      name: 'Scale', domain: 'custom', overload: 'f1', input: ['x'], output: ['y'], attribute: [], attributeProto: [fnAttr],
      node: [newNode({ opType: 'Mul', input: ['x', 'x'], output: ['y'] })], opsetImport: [{ domain: '', version: 21 }],
      valueInfo: [newValueInfo({ name: 'x' })], metadataProps: meta('fn'), docString: 'f',
    }],
    trainingInfo: [{
      initialization: newGraph({ name: 'init' }),
      algorithm: newGraph({ name: 'algo', node: [newNode({ opType: 'Identity', input: ['W'], output: ['W2'] })] }),
      initializationBinding: meta('ib'), updateBinding: [{ key: 'W', value: 'W2' }],
    }],
  });
}

/** Byte offsets where a top-level ModelProto field ends: the only cuts that still parse. */
function topLevelBoundaries(bytes: Uint8Array): Set<number> {
  const rd = new Reader(bytes);
  const ends = new Set<number>([0]);
  while (rd.pos < bytes.length) {
    const tag = rd.uint32();
    rd.skip(tag & 7, tag >>> 3);
    ends.add(rd.pos);
  }
  return ends;
}

describe('codec round trips', () => {
  it.each(REAL_MODELS.map((p) => [path.basename(p), p]))('%s: decode → encode is byte-identical', (_, p) => {
    const bytes = fs.readFileSync(p);
    expect(Buffer.compare(Buffer.from(encodeModel(decodeModel(bytes))), bytes)).toBe(0);
  });

  it('keeps IR 10+ fields and hand-written unknown fields (model, node, tensor)', () => {
    const model = ir10Model();
    const bytes = concat(encodeModel(model), unknownFields(3));
    const a = decodeModel(bytes);
    expect(a.unknown).toHaveLength(2);
    expect(a.graph!.node[0].unknown).toHaveLength(2);
    expect(a.graph!.initializer[0].unknown).toHaveLength(2);
    expect(a.graph!.node[0].overload).toBe('ov1');
    expect(a.functions[0].attributeProto[0].f).toBe(0.5);
    expect(a.graph!.sparseInitializer[0].indices!.int64Data).toEqual(BigInt64Array.from([0n, 8n]));
    expect(a.trainingInfo[0].updateBinding).toEqual([{ key: 'W', value: 'W2' }]);
    expect(a.graph!.valueInfo[0].metadataProps).toEqual([{ key: 'vi', value: 'v-vi' }]);
    const again = encodeModel(a);
    expect(Buffer.compare(Buffer.from(again), Buffer.from(bytes))).toBe(0);
    const b = decodeModel(again);
    expect(b).toEqual(a);
    // The decoded model equals what was built (plus the unknowns appended to the top level).
    expect({ ...b, unknown: undefined }).toEqual({ ...model, unknown: undefined });
  });

  it('keeps int64 extremes in attributes, int64_data and model_version', () => {
    const t = newTensor({ name: 'I', dims: [5], dataType: DataType.INT64, int64Data: BigInt64Array.from([INT64_MAX, INT64_MIN, -1n, 1n, 0n]) });
    const node = newNode({ opType: 'Slice', input: ['x'], output: ['y'], attribute: [
      newAttribute({ name: 'ends', type: AttributeType.INTS, ints: [INT64_MAX, INT64_MIN, -1n] }),
      newAttribute({ name: 'axis', type: AttributeType.INT, i: INT64_MIN }),
      newAttribute({ name: 'value', type: AttributeType.TENSOR, t }),
    ] });
    const m = newModel({ irVersion: 8, modelVersion: INT64_MIN, opsetImport: [{ domain: '', version: 13 }], graph: newGraph({ node: [node] }) });
    const bytes = encodeModel(m);
    const back = decodeModel(bytes);
    const n = back.graph!.node[0];
    expect(n.attribute[0].ints).toEqual([INT64_MAX, INT64_MIN, -1n]);
    expect(n.attribute[1].i).toBe(INT64_MIN);
    expect(n.attribute[1].i).not.toBe(0n);
    expect(back.modelVersion).toBe(INT64_MIN);
    expect(readTensorInt64(n.attribute[2].t!)).toEqual(BigInt64Array.from([INT64_MAX, INT64_MIN, -1n, 1n, 0n]));
    expect(Buffer.compare(Buffer.from(encodeModel(back)), Buffer.from(bytes))).toBe(0);
  });

  it('decodes packed and unpacked float_data / int64_data / int32_data alike', () => {
    const floats = [1.5, -0, 3.25e-8];
    const ints = [INT64_MAX, INT64_MIN, -1n, 300n];
    const halves = [0x3c00, 0xc000];
    const head = (w: Writer, dt: number, n: number) => { w.tag(1, 0); w.int64(BigInt(n)); w.tag(2, 0); w.int32(dt); };
    const build = (packed: boolean): Uint8Array[] => {
      const f = new Writer(); head(f, DataType.FLOAT, floats.length);
      const i = new Writer(); head(i, DataType.INT64, ints.length);
      const h = new Writer(); head(h, DataType.FLOAT16, halves.length);
      if (packed) {
        const pf = new Writer(); for (const x of floats) pf.float(x); f.message(4, pf);
        const pi = new Writer(); for (const x of ints) pi.int64(x); i.message(7, pi);
        const ph = new Writer(); for (const x of halves) ph.int32(x); h.message(5, ph);
      } else {
        for (const x of floats) { f.tag(4, 5); f.float(x); }
        for (const x of ints) { i.tag(7, 0); i.int64(x); }
        for (const x of halves) { h.tag(5, 0); h.int32(x); }
      }
      return [f, i, h].map((w) => concat(...w.finish()));
    };
    const [pf, pi, ph] = build(true).map((b) => decodeAs<TensorProto>('TensorProto', b));
    const [uf, ui, uh] = build(false).map((b) => decodeAs<TensorProto>('TensorProto', b));
    expect(uf.floatData).toEqual(pf.floatData);
    expect(Array.from(pf.floatData!)).toEqual(floats.map(Math.fround));
    expect(Object.is(pf.floatData![1], -0)).toBe(true);
    expect(ui.int64Data).toEqual(pi.int64Data);
    expect(Array.from(pi.int64Data!)).toEqual(ints);
    expect(readTensorFloat(uh)).toEqual(readTensorFloat(ph));
    expect(Array.from(readTensorFloat(ph))).toEqual([1, -2]);
    // Mixed: part packed, part unpacked, in one message.
    const mixed = new Writer(); head(mixed, DataType.INT64, 3);
    const p2 = new Writer(); p2.int64(1n); p2.int64(2n); mixed.message(7, p2);
    mixed.tag(7, 0); mixed.int64(INT64_MIN);
    expect(Array.from(decodeAs<TensorProto>('TensorProto', concat(...mixed.finish())).int64Data!)).toEqual([1n, 2n, INT64_MIN]);
  });
});

describe('damaged input', () => {
  const synthetic = concat(encodeModel(ir10Model()), unknownFields(4));
  const sources: [string, Uint8Array][] = [['hello_deepa', new Uint8Array(fs.readFileSync(DEEPA))], ['synthetic', synthetic]];

  it.each(sources)('%s: every cut either fails with LrError(parse) or lands on a top-level field boundary', (_, bytes) => {
    const ends = topLevelBoundaries(bytes);
    const cuts = new Set<number>();
    for (let i = 0; i < Math.min(400, bytes.length); i++) { cuts.add(i); cuts.add(bytes.length - 1 - i); }
    for (let i = 0; i < 600; i++) cuts.add(Math.floor((i * bytes.length) / 600));
    let failures = 0;
    for (const cut of cuts) {
      try {
        decodeModel(bytes.subarray(0, cut));
        expect(ends.has(cut), `cut at ${cut} parsed`).toBe(true);
      } catch (e) {
        if (!(e instanceof LrError) || e.kind !== 'parse') expect.fail(`cut at ${cut}: ${String(e)}`);
        failures++;
      }
    }
    expect(failures).toBeGreaterThan(cuts.size * 0.9);
  });

  it('random byte corruption fails only with LrError(parse)', () => {
    const rng = createRng(11);
    for (let round = 0; round < 3000; round++) {
      const b = synthetic.slice();
      const flips = 1 + rng.int(4);
      for (let k = 0; k < flips; k++) b[rng.int(b.length)] = rng.int(256);
      try { decodeModel(b); } catch (e) {
        if (!(e instanceof LrError) || e.kind !== 'parse') expect.fail(`round ${round}: ${String(e)}`);
      }
    }
  });

  it('loadModel reports truncated files as parse errors naming the file', () => {
    const dir = tmpDir();
    const bytes = fs.readFileSync(DEEPA);
    const ends = topLevelBoundaries(bytes);
    for (const cut of [1, 2, 17, 100, 5000, 150_000, bytes.length - 1]) {
      if (ends.has(cut)) continue;
      const f = path.join(dir, `cut${cut}.onnx`);
      fs.writeFileSync(f, bytes.subarray(0, cut));
      expectLrError(() => loadModel(f), 'parse', new RegExp(`cut${cut}\\.onnx`));
    }
  });

  // Regression: nested start-group tags once recursed in Reader.skip without a depth limit.
  it('deeply nested groups fail with LrError(parse), not a stack overflow', () => {
    const b = new Uint8Array(100_000).fill((15 << 3) | 3);
    expectLrError(() => decodeModel(b), 'parse');
  });

  it('loadModel turns hostile nesting into a parse error naming the file', () => {
    const f = path.join(tmpDir(), 'groups.onnx');
    fs.writeFileSync(f, new Uint8Array(100_000).fill((15 << 3) | 3));
    expectLrError(() => loadModel(f), 'parse', /groups\.onnx/);
  });

  // Regression: TextDecoder used to strip a leading U+FEFF from strings.
  it('keeps a leading byte-order mark in strings', () => {
    const m = newModel({ irVersion: 8, producerName: '\uFEFFname', opsetImport: [{ domain: '', version: 13 }], graph: newGraph() });
    expect(decodeModel(encodeModel(m)).producerName).toBe('\uFEFFname');
  });
});
