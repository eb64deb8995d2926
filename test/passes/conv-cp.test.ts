import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { convCp } from '../../passes/conv-cp.js';
import { ModelBuilder } from '../../models/builder.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { isSkip } from '../../src/rewrite/pass.js';
import { createRng } from '../../src/util/rng.js';
import { compareInOrt, convModel, cpKernel, describe1, matchOnly, opCounts, randn, rewrite, windowSpec, type ConvSpec, type PadMode } from './conv-harness.js';

const PADS: PadMode[] = ['none', 'sym', 'asym', 'SAME_UPPER', 'SAME_LOWER', 'VALID'];
/** ORT 1.30 refuses dilations with auto_pad SAME_* ("Dilation not supported"), even for the original model. */
const ortRuns = (c: { dilation: number; pad: PadMode }): boolean => !(c.dilation > 1 && c.pad.startsWith('SAME'));

describe('conv-cp', () => {
  it('exact CP rank: 1x1 → depthwise → 1x1 matches the original in ORT (1D/2D/3D, strides, pads, dilations, bias)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          spatial: fc.constantFrom(1, 2, 3),
          k: fc.constantFrom(3, 5),
          stride: fc.constantFrom(1, 2),
          dilation: fc.constantFrom(1, 2),
          pad: fc.constantFrom(...PADS),
          bias: fc.boolean(),
          kernelShapeAttr: fc.boolean(),
          seed: fc.integer({ min: 0, max: 1_000_000 }),
        }).filter(ortRuns),
        async (c) => {
          const rng = createRng(c.seed);
          const S = 5 + rng.int(4);
          const T = 5 + rng.int(4);
          const R = 2 + rng.int(3); // 2..4: generic factors make the CP unique (Kruskal)
          const spec: ConvSpec = { S, T, bias: c.bias, kernelShapeAttr: c.kernelShapeAttr, ...windowSpec(c.spatial, c.k, c.stride, c.dilation, c.pad) };
          const K = spec.kernel.reduce((a, b) => a * b, 1);
          const bytes = convModel(spec, cpKernel(rng, T, S, K, R), rng);
          const out = rewrite(bytes, convCp, [R]);
          expect(out.applied.relError, describe1(spec)).toBeLessThan(1e-5);
          expect(opCounts(out.proto)).toEqual({ Conv: 3 });
          const [a, dw, last] = out.proto.graph!.node;
          const inits = new Map(out.proto.graph!.initializer.map((t) => [t.name, t.dims]));
          const ones = new Array<number>(c.spatial).fill(1);
          expect(inits.get(a.input[1])).toEqual([R, S, ...ones]);
          expect(inits.get(dw.input[1])).toEqual([R, 1, ...spec.kernel]);
          expect(inits.get(last.input[1])).toEqual([T, R, ...ones]);
          expect(Number(dw.attribute.find((x) => x.name === 'group')!.i)).toBe(R);
          const placement = (n: typeof a): string[] => n.attribute.map((x) => x.name ?? '').filter((x) => ['strides', 'pads', 'auto_pad', 'dilations'].includes(x));
          expect(placement(a)).toEqual([]);
          expect(placement(last)).toEqual([]);
          expect(last.input).toHaveLength(c.bias ? 3 : 2);
          const cmp = await compareInOrt(bytes, out.bytes, spec, c.seed);
          expect(cmp.b.dims, describe1(spec)).toEqual(cmp.a.dims);
          expect(cmp.rel, describe1(spec)).toBeLessThan(1e-4);
          runs++;
        },
      ),
      { seed: 2, numRuns: 100 },
    );
    expect(runs).toBeGreaterThanOrEqual(100);
  });

  it('declines depthwise, grouped, 1x1 and integer weights with reasons', () => {
    const rng = createRng(1);
    const dw = matchOnly(convModel({ S: 8, T: 8, group: 8, ...windowSpec(2, 3, 1, 1, 'sym') }, randn(rng, 72), rng), convCp).m;
    expect(isSkip(dw) && dw.skip).toMatch(/^depthwise: nothing to gain/);
    const g2 = matchOnly(convModel({ S: 8, T: 8, group: 2, ...windowSpec(2, 3, 1, 1, 'sym') }, randn(rng, 8 * 4 * 9), rng), convCp).m;
    expect(isSkip(g2) && g2.skip).toMatch(/grouped conv/);
    const pw = matchOnly(convModel({ S: 8, T: 8, ...windowSpec(2, 1, 1, 1, 'none') }, randn(rng, 64), rng), convCp).m;
    expect(isSkip(pw) && pw.skip).toMatch(/1x1 kernel/);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 4, 6, 6]);
    b.output(b.node('Conv', [x, b.initInt64('w', [4, 4, 3, 3], new Array<number>(144).fill(1))], {}, { name: 'conv' }));
    const q = matchOnly(encodeModel(b.build()), convCp).m;
    expect(isSkip(q) && q.skip).toMatch(/not floating point/);
  });

  it('costs: R(S + T + K) params; the first 1x1 pays the stride factor', () => {
    const rng = createRng(2);
    const { m } = matchOnly(convModel({ S: 16, T: 32, ...windowSpec(2, 3, 2, 1, 'sym') }, randn(rng, 32 * 16 * 9), rng), convCp);
    if (isSkip(m)) throw new Error(m.skip);
    const c = convCp.cost(m, [10]);
    expect(c.before.params).toBe(32 * 16 * 9);
    expect(c.after.params).toBe(10 * (16 + 32 + 9));
    expect(c.after.macsPerPosition).toBe(4 * 10 * 16 + 10 * 9 + 32 * 10);
  });

  it('chooseRanks: fixed, ratio, energy from the Tucker ranks, align', () => {
    const rng = createRng(5);
    const { m } = matchOnly(convModel({ S: 16, T: 24, ...windowSpec(2, 3, 1, 1, 'sym') }, cpKernel(rng, 24, 16, 9, 6), rng), convCp);
    if (isSkip(m)) throw new Error(m.skip);
    expect(convCp.chooseRanks(m, { kind: 'fixed', rank: 7 })).toEqual([7]);
    expect(convCp.chooseRanks(m, { kind: 'ratio', ratio: 0.5 })).toEqual([Math.floor((0.5 * 24 * 16 * 9) / (16 + 24 + 9))]);
    expect(convCp.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([6]);
    expect(convCp.chooseRanks(m, { kind: 'fixed', rank: 7, align: 8 })).toEqual([8]);
  });
});
