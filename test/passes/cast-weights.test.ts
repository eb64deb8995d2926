/**
 * Weights stored fp16/bf16 behind a Cast to float (src/rewrite/cast-weights.ts): listed as
 * layers, decomposed in fp32, each factor stored in the weight's type with a Cast after it,
 * the old weight and its Cast gone. Tolerances: the stored weight is W rounded to fp16
 * (unit roundoff u = 2⁻¹¹ ≈ 4.9e-4) and each factor is rounded again, so at the exact rank
 * the output differs from the original by a few u: 3e-3 (≈ 6u) in relative L2; bf16
 * (u = 2⁻⁸ ≈ 3.9e-3) gets 2.5e-2.
 */
import * as ort from 'onnxruntime-node';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { computeElemType, findLayers } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType, type ModelProto } from '../../src/onnx/schema.js';
import { makeFloatTensor } from '../../src/onnx/tensor.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { castNewFactors } from '../../src/rewrite/cast-weights.js';
import { createRng } from '../../src/util/rng.js';
import { runCli } from '../helpers/cli.js';
import { lowRank, relL2 } from '../helpers/ort.js';

type Stored = DataType.FLOAT16 | DataType.BFLOAT16;
const TOL: Record<Stored, number> = { [DataType.FLOAT16]: 3e-3, [DataType.BFLOAT16]: 2.5e-2 };

/** Adds W stored as `stored` and Cast(to FLOAT); returns the Cast's output. */
function castWeight(b: ModelBuilder, name: string, dims: number[], data: Float32Array, stored: Stored): string {
  b.graph.initializer.push(makeFloatTensor(name, dims, data, stored));
  return b.node('Cast', [name], { to: DataType.FLOAT }, { name: `${name}/cast` });
}

type Kind = 'gemm' | 'matmul' | 'matmul-left' | 'conv1x1' | 'conv3x3' | 'gather';

/** One layer of `kind` whose weight (exact rank r) is stored as `stored` behind a Cast. */
function layerModel(kind: Kind, r: number, stored: Stored, seed: number): { bytes: Uint8Array; feeds: Record<string, ort.Tensor> } {
  const b = new ModelBuilder({ opset: 13 });
  const rng = createRng(seed);
  const normal = (n: number): Float32Array => Float32Array.from({ length: n }, () => rng.normal());
  let feeds: Record<string, ort.Tensor>;
  switch (kind) {
    case 'gemm': {
      // Y = X·Wᵀ + c with W [N, K] stored transposed (transB = 1), as torch Linear exports.
      const x = b.input('x', [5, 40]);
      const w = castWeight(b, 'w', [24, 40], lowRank(24, 40, r, seed), stored);
      b.output(b.node('Gemm', [x, w, b.init('c', [24], normal(24))], { transB: 1 }, { name: 'fc' }));
      feeds = { x: new ort.Tensor('float32', normal(200), [5, 40]) };
      break;
    }
    case 'matmul': case 'matmul-left': {
      const x = b.input('x', kind === 'matmul' ? [2, 3, 32] : [32, 6]);
      const w = castWeight(b, 'w', kind === 'matmul' ? [32, 28] : [20, 32], kind === 'matmul' ? lowRank(32, 28, r, seed) : lowRank(20, 32, r, seed), stored);
      b.output(b.node('MatMul', kind === 'matmul' ? [x, w] : [w, x], {}, { name: 'mm' }));
      feeds = { x: new ort.Tensor('float32', normal(192), kind === 'matmul' ? [2, 3, 32] : [32, 6]) };
      break;
    }
    case 'conv1x1': case 'conv3x3': {
      const k = kind === 'conv1x1' ? 1 : 3;
      const x = b.input('x', [1, 16, 8, 8]);
      // A kernel of exact Tucker-2 ranks (r, r): T×S channel mixing of rank r around an r×r core.
      const w = kind === 'conv1x1' ? lowRank(24, 16, r, seed) : tucker2Kernel(24, 16, k, r, seed);
      const wc = castWeight(b, 'w', [24, 16, k, k], w, stored);
      b.output(b.node('Conv', [x, wc, b.init('bias', [24], normal(24))], { pads: [k >> 1, k >> 1, k >> 1, k >> 1] }, { name: 'conv' }));
      feeds = { x: new ort.Tensor('float32', normal(1024), [1, 16, 8, 8]) };
      break;
    }
    case 'gather': {
      const ids = b.input('ids', [7], DataType.INT64);
      const t = castWeight(b, 'table', [60, 20], lowRank(60, 20, r, seed), stored);
      b.output(b.node('Gather', [t, ids], {}, { name: 'embed' }));
      feeds = { ids: new ort.Tensor('int64', BigInt64Array.from([0, 5, 59, 17, 3, 3, 42].map(BigInt)), [7]) };
      break;
    }
  }
  return { bytes: encodeModel(b.build()), feeds };
}

/** W [T, S, k, k] = B·G·A with A [r, S], B [T, r], G [r, r, k, k]: Tucker-2 ranks (r, r). */
function tucker2Kernel(t: number, s: number, k: number, r: number, seed: number): Float32Array {
  const rng = createRng(seed);
  const a = Float64Array.from({ length: r * s }, () => rng.normal());
  const bb = Float64Array.from({ length: t * r }, () => rng.normal());
  const g = Float64Array.from({ length: r * r * k * k }, () => rng.normal());
  const w = new Float32Array(t * s * k * k);
  for (let o = 0; o < t; o++) for (let i = 0; i < s; i++) for (let p = 0; p < k * k; p++) {
    let sum = 0;
    for (let u = 0; u < r; u++) for (let v = 0; v < r; v++) sum += bb[o * r + u]! * g[(u * r + v) * k * k + p]! * a[v * s + i]!;
    w[(o * s + i) * k * k + p] = sum;
  }
  return w;
}

async function run(bytes: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  try {
    const out = await s.run(feeds);
    return s.outputNames.map((k) => out[k]!.data as Float32Array);
  } finally {
    await s.release();
  }
}

function optimizeAt(bytes: Uint8Array, rank: number, method: 'auto' | 'svd' = 'auto'): { proto: ModelProto; recs: ReturnType<typeof optimizeModel> } {
  const model = new Model(decodeModel(bytes));
  const recs = optimizeModel(model, undefined, { method, policy: { kind: 'fixed', rank }, minParams: 0, seed: 0 });
  return { proto: model.proto, recs };
}

describe('Cast-fed weights', () => {
  it('are listed as layers: the stored constant is the weight, the Cast is noted, the op computes in float', () => {
    for (const kind of ['gemm', 'matmul', 'matmul-left', 'conv3x3', 'gather'] as const) {
      const model = new Model(decodeModel(layerModel(kind, 3, DataType.FLOAT16, 1).bytes));
      const layers = findLayers(model);
      expect(layers, kind).toHaveLength(1);
      const l = layers[0]!;
      expect(l.weightName).toBe(kind === 'gather' ? 'table' : 'w');
      expect(l.weight.tensor.dataType).toBe(DataType.FLOAT16);
      expect(l.cast?.node.opType).toBe('Cast');
      expect(l.cast?.stored).toBe(DataType.FLOAT16);
      expect(computeElemType(l)).toBe(DataType.FLOAT);
      expect(l.weightInput).toBe(kind === 'matmul-left' || kind === 'gather' ? 0 : 1);
    }
    // An fp32 weight has no `cast`: the record of an fp32 layer is as before.
    const b = new ModelBuilder();
    b.output(b.node('MatMul', [b.input('x', [2, 8]), b.init('w', [8, 8], lowRank(8, 8, 2, 1))]));
    expect('cast' in findLayers(new Model(b.build()))[0]!).toBe(false);
  });

  it('a Cast to something else than float, or of a float weight, is not a stored-weight Cast', () => {
    const b = new ModelBuilder();
    b.graph.initializer.push(makeFloatTensor('w', [8, 8], lowRank(8, 8, 2, 1), DataType.FLOAT16));
    const d = b.node('Cast', [b.node('Cast', ['w'], { to: DataType.DOUBLE })], { to: DataType.FLOAT });
    b.output(b.node('MatMul', [b.input('x', [2, 8]), d]));
    expect(findLayers(new Model(b.build()))).toEqual([]);
  });

  for (const stored of [DataType.FLOAT16, DataType.BFLOAT16] as const) {
    it(`exact rank, ${stored === DataType.FLOAT16 ? 'fp16' : 'bf16'}: factors stored in that type with a Cast each, old weight and Cast gone, ORT output within ${TOL[stored]}`, async () => {
      for (const kind of ['gemm', 'matmul', 'matmul-left', 'conv1x1', 'conv3x3', 'gather'] as const) {
        const r = 3;
        const { bytes, feeds } = layerModel(kind, r, stored, 11);
        const { proto, recs } = optimizeAt(bytes, r);
        expect(recs[0]!.skipped, `${kind}: ${recs[0]!.reason}`).toBeUndefined();
        const g = proto.graph!;
        const inits = new Map(g.initializer.map((t) => [t.name!, t]));
        expect(inits.has(kind === 'gather' ? 'table' : 'w'), kind).toBe(false);
        expect(g.node.some((n) => n.name === (kind === 'gather' ? 'table' : 'w') + '/cast'), kind).toBe(false);
        // Every factor is stored in the weight's type and read only through a Cast to float.
        const casts = g.node.filter((n) => n.opType === 'Cast');
        const factors = g.initializer.filter((t) => t.dataType === stored);
        expect(factors.length, kind).toBe(kind === 'conv3x3' ? 3 : 2);
        for (const f of factors) {
          const readers = g.node.filter((n) => n.input.includes(f.name!));
          expect(readers.map((n) => n.opType), `${kind} ${f.name}`).toEqual(['Cast']);
        }
        expect(casts).toHaveLength(factors.length);
        expect(g.initializer.filter((t) => t.dataType !== stored && t.dataType !== DataType.FLOAT)).toEqual([]);
        const [a] = await run(bytes, feeds);
        const [c] = await run(encodeModel(proto), feeds);
        expect(relL2(a!, c!), kind).toBeLessThan(TOL[stored]);
      }
    });
  }

  it('LSTM input weights and batched MatMul weights behind a Cast are rewritten the same way', async () => {
    for (const kind of ['lstm', 'batched'] as const) {
      const b = new ModelBuilder({ opset: 14 });
      const rng = createRng(5);
      const normal = (n: number): Float32Array => Float32Array.from({ length: n }, () => rng.normal() * 0.3);
      let feeds: Record<string, ort.Tensor>;
      if (kind === 'lstm') {
        const x = b.input('x', [4, 2, 24]);
        const w = castWeight(b, 'w', [1, 32, 24], lowRank(32, 24, 3, 2), DataType.FLOAT16);
        const rr = castWeight(b, 'r', [1, 32, 8], normal(256), DataType.FLOAT16);
        const [y] = b.nodeMulti('LSTM', [x, w, rr], { hidden_size: 8 }, { name: 'lstm', outputs: 1 });
        b.output(y!);
        feeds = { x: new ort.Tensor('float32', normal(192), [4, 2, 24]) };
      } else {
        const x = b.input('x', [3, 5, 20]);
        const w = new Float32Array(3 * 20 * 16);
        for (let s = 0; s < 3; s++) w.set(lowRank(20, 16, 3, 10 + s), s * 320);
        b.output(b.node('MatMul', [x, castWeight(b, 'w', [3, 20, 16], w, DataType.FLOAT16)], {}, { name: 'bmm' }));
        feeds = { x: new ort.Tensor('float32', normal(300), [3, 5, 20]) };
      }
      const bytes = encodeModel(b.build());
      const { proto, recs } = optimizeAt(bytes, 3);
      const rec = recs.find((x) => x.name === (kind === 'lstm' ? 'lstm' : 'bmm'))!;
      expect(rec.skipped, `${kind}: ${rec.reason}`).toBeUndefined();
      expect(proto.graph!.initializer.some((t) => t.name === 'w'), kind).toBe(false);
      for (const f of proto.graph!.initializer.filter((t) => t.dataType === DataType.FLOAT16 && t.name !== 'r')) {
        expect(proto.graph!.node.filter((n) => n.input.includes(f.name!)).map((n) => n.opType), `${kind} ${f.name}`).toEqual(['Cast']);
      }
      const [a] = await run(bytes, feeds);
      const [c] = await run(encodeModel(proto), feeds);
      expect(relL2(a!, c!), kind).toBeLessThan(3e-3);
    }
  });

  it('a Cast-fed weight read elsewhere too is declined with the reason; one shared by two MatMuls is factorized once', async () => {
    const mk = (other: 'add' | 'second-cast' | 'matmul'): Uint8Array => {
      const b = new ModelBuilder();
      const x = b.input('x', [2, 32]);
      const w = castWeight(b, 'w', [32, 32], lowRank(32, 32, 3, 4), DataType.FLOAT16);
      b.output(b.node('MatMul', [x, w], {}, { name: 'mm' }));
      if (other === 'add') b.output(b.node('Add', [w, w], {}, { name: 'reuse' }));
      if (other === 'second-cast') b.output(b.node('Cast', ['w'], { to: DataType.DOUBLE }, { name: 'wide' }), undefined, DataType.DOUBLE);
      if (other === 'matmul') b.output(b.node('MatMul', [b.input('x2', [3, 32]), w], {}, { name: 'mm2' }));
      return encodeModel(b.build());
    };
    const add = optimizeAt(mk('add'), 3).recs.find((r) => r.name === 'mm')!;
    expect(add.skipped).toBe(true);
    expect(add.reason).toBe('the fp16 weight w (after its Cast) is also read by Add reuse: its factors would add parameters');
    const wide = optimizeAt(mk('second-cast'), 3).recs.find((r) => r.name === 'mm')!;
    expect(wide.reason).toBe('the fp16 weight w is also read by Cast wide: its factors would add parameters');
    const bytes = mk('matmul');
    const { proto, recs } = optimizeAt(bytes, 3);
    expect(recs.map((r) => [r.name, r.skipped ?? false])).toEqual([['mm', false], ['mm2', false]]);
    expect(proto.graph!.initializer.map((t) => [t.dataType, t.dims])).toEqual([[DataType.FLOAT16, [32, 3]], [DataType.FLOAT16, [3, 32]]]);
    const feeds = { x: new ort.Tensor('float32', Float32Array.from({ length: 64 }, (_, i) => Math.sin(i)), [2, 32]), x2: new ort.Tensor('float32', Float32Array.from({ length: 96 }, (_, i) => Math.cos(i)), [3, 32]) };
    const a = await run(bytes, feeds);
    const c = await run(encodeModel(proto), feeds);
    for (let i = 0; i < 2; i++) expect(relL2(a[i]!, c[i]!)).toBeLessThan(3e-3);
  });

  it('every Conv pass, chosen by --method or winning its challenge under auto, stores its factors fp16 behind Casts (dispatch wraps them all)', async () => {
    const rng = createRng(4);
    const w = Float32Array.from({ length: 32 * 32 * 9 }, () => rng.normal());
    const x = new ort.Tensor('float32', Float32Array.from({ length: 2048 }, () => rng.normal()), [1, 32, 8, 8]);
    const chosen = new Set<string>();
    for (const method of ['auto', 'tucker2', 'cp', 'tt', 'spatial-svd', 'cp4'] as const) {
      const b = new ModelBuilder();
      const wc = castWeight(b, 'w', [32, 32, 3, 3], w, DataType.FLOAT16);
      b.output(b.node('Conv', [b.input('x', [1, 32, 8, 8]), wc], { pads: [1, 1, 1, 1] }, { name: 'conv' }));
      const bytes = encodeModel(b.build());
      const model = new Model(decodeModel(bytes));
      // Under auto a rank ratio: a fixed rank N has spatial SVD compete at N only, larger than Tucker-2 N,N on a 3x3 kernel.
      const policy = method === 'auto' ? { kind: 'ratio' as const, ratio: 0.5 } : { kind: 'fixed' as const, rank: 8 };
      const [rec] = optimizeModel(model, undefined, { method: method as never, policy, minParams: 0, seed: 0 });
      expect(rec!.skipped, `${method}: ${rec!.reason}`).toBeUndefined();
      chosen.add(rec!.pass!);
      // Under auto a challenger (CP here, seeded) wins over Tucker-2: the challenger's own apply is wrapped.
      if (method === 'auto') expect(rec!.pass).toBe('conv-cp');
      const g = model.proto.graph!;
      expect(g.initializer.length, method).toBeGreaterThan(1);
      for (const t of g.initializer) {
        expect(t.dataType, `${method} ${t.name}`).toBe(DataType.FLOAT16);
        expect(g.node.filter((n) => n.input.includes(t.name!)).map((n) => n.opType), `${method} ${t.name}`).toEqual(['Cast']);
      }
      const [a] = await run(bytes, { x });
      const [c] = await run(encodeModel(model.proto), { x });
      expect(relL2(a!, c!), method).toBeLessThan(1);
    }
    expect([...chosen].sort()).toEqual(['conv-cp', 'conv-cp4', 'conv-spatial-svd', 'conv-tt', 'conv-tucker2']);
  });

  it('castNewFactors is idempotent: a second run finds every factor already cast', () => {
    const model = new Model(decodeModel(layerModel('matmul', 3, DataType.FLOAT16, 2).bytes));
    const layer = findLayers(model)[0]!;
    const before = new Set(model.root.nodes);
    optimizeModel(model, undefined, { method: 'svd', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0 });
    const cx = { model, rng: createRng(0), shared: new Map() };
    expect(castNewFactors(cx, model.root, layer.cast!, before)).toBe(0);
  });
});

describe('Cast-fed weights from the command line', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-cast-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('optimize rewrites an fp16-stored MatMul stack, verifies it and writes a smaller fp16 file', async () => {
    const b = new ModelBuilder();
    let h = b.input('x', [4, 96]);
    for (let i = 0; i < 3; i++) {
      const w = castWeight(b, `w${i}`, [96, 96], lowRank(96, 96, 6, 20 + i).map((v) => v / 10), DataType.FLOAT16);
      h = b.node('MatMul', [h, w], {}, { name: `fc${i}` });
    }
    b.output(h);
    const inPath = path.join(dir, 'in.onnx');
    const outPath = path.join(dir, 'out.onnx');
    writeFileSync(inPath, encodeModel(b.build()));
    const res = await runCli('optimize', inPath, outPath, '--rank', '6', '--min-params', '0', '--no-latency', '--json');
    expect(res.code, res.err).toBe(0);
    const report = JSON.parse(res.out);
    const layers = report.layers.filter((l: { op: string }) => l.op === 'MatMul');
    expect(layers).toHaveLength(3);
    for (const l of layers) expect(l.skipped ?? false, l.reason).toBe(false);
    expect(statSync(outPath).size).toBeLessThan(statSync(inPath).size * 0.2);
    const out = decodeModel(readFileSync(outPath));
    expect(out.graph!.initializer.every((t) => t.dataType === DataType.FLOAT16)).toBe(true);
    expect(out.graph!.node.filter((n) => n.opType === 'Cast')).toHaveLength(6);
  });
});
