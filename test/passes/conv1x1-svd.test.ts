import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { conv1x1Svd } from '../../passes/conv1x1-svd.js';
import { isSkip } from '../../src/rewrite/pass.js';
import { createRng } from '../../src/util/rng.js';
import { compareInOrt, convModel, describe1, lowRankMatrix, matchOnly, opCounts, randn, rewrite, windowSpec, type ConvSpec, PADS, ortRuns } from './conv-harness.js';


describe('conv1x1-svd', () => {
  it('exact matrix rank: the SVD pair of 1x1 convs matches the original in ORT (1D/2D/3D, strides, pads, bias)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          spatial: fc.constantFrom(1, 2, 3),
          stride: fc.constantFrom(1, 2),
          dilation: fc.constantFrom(1, 2),
          pad: fc.constantFrom(...PADS),
          bias: fc.boolean(),
          kernelShapeAttr: fc.boolean(),
          seed: fc.integer({ min: 0, max: 1_000_000 }),
        }).filter(ortRuns),
        async (c) => {
          const rng = createRng(c.seed);
          const S = 6 + rng.int(6);
          const T = 6 + rng.int(6);
          const r = 1 + rng.int(Math.min(S, T) - 1);
          const spec: ConvSpec = { S, T, bias: c.bias, kernelShapeAttr: c.kernelShapeAttr, ...windowSpec(c.spatial, 1, c.stride, c.dilation, c.pad) };
          const bytes = convModel(spec, lowRankMatrix(rng, T, S, r), rng);
          const out = rewrite(bytes, conv1x1Svd, [r]);
          expect(out.applied.relError, describe1(spec)).toBeLessThan(1e-5);
          expect(opCounts(out.proto)).toEqual({ Conv: 2 });
          const [a, b] = out.proto.graph!.node;
          const inits = new Map(out.proto.graph!.initializer.map((t) => [t.name, t.dims]));
          const ones = new Array<number>(c.spatial).fill(1);
          expect(inits.get(a.input[1])).toEqual([r, S, ...ones]);
          expect(inits.get(b.input[1])).toEqual([T, r, ...ones]);
          // Stride and pads on the first conv only; the bias on the second.
          const placement = (n: typeof a): string[] => n.attribute.map((x) => x.name ?? '').filter((x) => ['strides', 'pads', 'auto_pad', 'dilations'].includes(x));
          expect(placement(b)).toEqual([]);
          expect(a.input).toHaveLength(2);
          expect(b.input).toHaveLength(c.bias ? 3 : 2);
          const cmp = await compareInOrt(bytes, out.bytes, spec, c.seed);
          expect(cmp.b.dims, describe1(spec)).toEqual(cmp.a.dims);
          expect(cmp.rel, describe1(spec)).toBeLessThan(1e-4);
          runs++;
        },
      ),
      { seed: 1, numRuns: 100 },
    );
    expect(runs).toBeGreaterThanOrEqual(100);
  });

  it('declines kernels larger than 1 and grouped 1x1 convs', () => {
    const rng = createRng(0);
    const k3 = matchOnly(convModel({ S: 4, T: 4, ...windowSpec(2, 3, 1, 1, 'none') }, randn(rng, 144), rng), conv1x1Svd).m;
    expect(isSkip(k3) && k3.skip).toMatch(/not 1x1/);
    const g2 = matchOnly(convModel({ S: 4, T: 4, group: 2, ...windowSpec(2, 1, 1, 1, 'none') }, randn(rng, 8), rng), conv1x1Svd).m;
    expect(isSkip(g2) && g2.skip).toMatch(/grouped 1x1/);
  });

  it('costs: the strided first conv runs at the output resolution: r·(S + T) per position', () => {
    const rng = createRng(0);
    const { m } = matchOnly(convModel({ S: 32, T: 64, ...windowSpec(2, 1, 2, 1, 'none') }, randn(rng, 64 * 32), rng), conv1x1Svd);
    if (isSkip(m)) throw new Error(m.skip);
    expect(conv1x1Svd.cost(m, [8])).toEqual({
      before: { params: 2048, macsPerPosition: 2048 },
      after: { params: 8 * 96, macsPerPosition: 8 * 96 },
    });
  });

  it('chooseRanks: energy finds the exact rank', () => {
    const rng = createRng(4);
    const { m } = matchOnly(convModel({ S: 24, T: 32, ...windowSpec(2, 1, 1, 1, 'none') }, lowRankMatrix(rng, 32, 24, 5), rng), conv1x1Svd);
    if (isSkip(m)) throw new Error(m.skip);
    expect(conv1x1Svd.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([5]);
  });
});
