import { describe, expect, it } from 'vitest';
import { intAttr, intsAttr, stringAttr } from '../../src/graph/attrs.js';
import { newNode } from '../../src/onnx/schema.js';
import {
  chainConvAttrs, convCost, cpCost, isDepthwise, isPointwise, placementAttrs, pointwiseSvdCost, readConvGeometry, tucker2Cost, unfoldS, unfoldT,
  groupKernels, type ConvGeometry,
} from '../../src/rewrite/conv-geometry.js';
import { isSkip } from '../../src/rewrite/pass.js';

const conv = (attrs: ReturnType<typeof intAttr>[], bias = false) =>
  newNode({ opType: 'Conv', name: 'c', input: bias ? ['x', 'w', 'b'] : ['x', 'w'], output: ['y'], attribute: attrs });

function geo(node: ReturnType<typeof conv>, w: number[]): ConvGeometry {
  const g = readConvGeometry(node, w);
  if (isSkip(g)) throw new Error(g.skip);
  return g;
}

describe('conv-geometry', () => {
  it('reads defaults for any spatial rank', () => {
    const g = geo(conv([]), [8, 4, 3, 5, 1]);
    expect(g).toMatchObject({ spatial: 3, T: 8, S: 4, group: 1, kernel: [3, 5, 1], kernelSize: 15, strides: [1, 1, 1], dilations: [1, 1, 1], pads: [0, 0, 0, 0, 0, 0], autoPad: 'NOTSET', strideFactor: 1, hasBias: false });
  });

  it('group multiplies the weight dim into S; depthwise and pointwise are recognised', () => {
    const g = geo(conv([intAttr('group', 4), intsAttr('strides', [2, 3])], true), [8, 1, 3, 3]);
    expect(g).toMatchObject({ S: 4, group: 4, strideFactor: 6, hasBias: true });
    expect(isDepthwise(g)).toBe(true);
    expect(isPointwise(geo(conv([]), [8, 4, 1, 1]))).toBe(true);
  });

  it('declines inconsistent attributes with reasons', () => {
    const bad = (attrs: ReturnType<typeof intAttr>[], w: number[]): string => {
      const g = readConvGeometry(conv(attrs), w);
      return isSkip(g) ? g.skip : 'accepted';
    };
    expect(bad([intsAttr('kernel_shape', [3, 3])], [8, 4, 5, 5])).toMatch(/kernel_shape/);
    expect(bad([intsAttr('pads', [1, 1])], [8, 4, 3, 3])).toMatch(/pads/);
    expect(bad([intsAttr('strides', [1])], [8, 4, 3, 3])).toMatch(/strides/);
    expect(bad([intAttr('group', 3)], [8, 4, 3, 3])).toMatch(/divisible/);
    expect(bad([stringAttr('auto_pad', 'SAME')], [8, 4, 3, 3])).toMatch(/auto_pad/);
    expect(bad([], [8, 4])).toMatch(/rank 2/);
  });

  it('placement attributes are copied, chain attributes set kernel_shape and group', () => {
    const n = conv([intsAttr('strides', [2, 2]), intsAttr('kernel_shape', [3, 3]), stringAttr('auto_pad', 'SAME_UPPER'), intAttr('group', 2)]);
    expect(placementAttrs(n).map((a) => a.name)).toEqual(['strides', 'auto_pad']);
    const attrs = chainConvAttrs([1, 1], 2, placementAttrs(n));
    expect(attrs.map((a) => a.name)).toEqual(['strides', 'auto_pad', 'kernel_shape', 'group']);
    expect(chainConvAttrs([3], 1).map((a) => a.name)).toEqual(['kernel_shape']);
  });

  it('costs per output position: the stride factor applies to stages at the input resolution only', () => {
    const g = geo(conv([intsAttr('strides', [2, 2, 1])]), [32, 16, 3, 3, 3]);
    expect(convCost(g)).toEqual({ params: 32 * 16 * 27, macsPerPosition: 32 * 16 * 27 });
    expect(tucker2Cost(g, 4, 8)).toEqual({ params: 16 * 4 + 8 * 4 * 27 + 32 * 8, macsPerPosition: 4 * 16 * 4 + 8 * 4 * 27 + 32 * 8 });
    expect(cpCost(g, 5)).toEqual({ params: 5 * (16 + 27 + 32), macsPerPosition: 4 * 5 * 16 + 5 * 27 + 32 * 5 });
    const p = geo(conv([intsAttr('strides', [2, 2])]), [32, 16, 1, 1]);
    expect(pointwiseSvdCost(p, 4)).toEqual({ params: 4 * 48, macsPerPosition: 4 * 48 });
    const grouped = geo(conv([intAttr('group', 2)]), [32, 8, 3, 3]);
    // Per-group ranks: first [2·r1, 8], core [2·r2, r1, 9], last [32, r2].
    expect(tucker2Cost(grouped, 3, 5).params).toBe(2 * 3 * 8 + 2 * 5 * 3 * 9 + 32 * 5);
  });

  it('unfoldings of a group kernel', () => {
    const g = geo(conv([intAttr('group', 2)]), [4, 3, 2]); // T 4, S 6, group 2: t 2, s 3, K 2
    const w = Float64Array.from({ length: 4 * 3 * 2 }, (_, i) => i);
    const gks = groupKernels(w, g);
    expect(gks).toHaveLength(2);
    expect(Array.from(unfoldT(gks[1]).data)).toEqual(Array.from({ length: 12 }, (_, i) => 12 + i));
    const s = unfoldS(gks[0]); // [s 3, t 2 · K 2]: (c, a·2 + k) = W[a, c, k]
    expect(s.rows).toBe(3);
    expect(Array.from(s.data.subarray(0, 4))).toEqual([0, 1, 6, 7]);
  });
});
