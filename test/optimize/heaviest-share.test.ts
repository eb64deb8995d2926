/**
 * The layer filter's MAC share (what budgets default to, issue 18): the heaviest layers
 * that together carry a share of the MACs are considered, the rest listed with the reason;
 * an explicit --heaviest N wins.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import type { ShapeMap } from '../../src/graph/shapes.js';
import { filterReasons } from '../../src/optimize/driver.js';

/** Four 3x3 convs 32→32, each halving the resolution: MACs 1, 1/4, 1/16, 1/64 of the first's. */
function pyramid(): { model: Model; shapes: ShapeMap } {
  const m = new ModelBuilder({ opset: 13 });
  let x = m.input('x', [1, 32, 48, 48]);
  const shapes: ShapeMap = new Map([[x, [1, 32, 48, 48]]]);
  let hw = 48;
  for (const [i, name] of ['a', 'b', 'c', 'd'].entries()) {
    const stride = i === 0 ? 1 : 2;
    hw /= stride;
    x = m.node('Conv', [x, m.init(`w${name}`, [32, 32, 3, 3], new Float32Array(32 * 32 * 9).fill(0.01))], { pads: [1, 1, 1, 1], strides: [stride, stride] }, { name });
    shapes.set(x, [1, 32, hw, hw]);
  }
  m.output(x);
  return { model: new Model(m.build()), shapes };
}

describe('heaviest layers by MAC share', () => {
  it('keeps the fewest heaviest layers carrying the share, and says why the others are left', () => {
    const { model, shapes } = pyramid();
    const layers = findLayers(model, shapes);
    // Shares 1 : 1/4 : 1/16 : 1/64 of 1.328: a+b carry 94.1%, a+b+c 98.8%.
    const out = filterReasons(layers, { method: 'auto', minParams: 0, heaviestShare: 0.95 });
    expect([...out.keys()].map((l) => l.name)).toEqual(['d']);
    expect(out.get(layers[3]!)).toBe('not among the 3 layers carrying 95% of the MACs (the default with a budget; --heaviest N sets the number)');
    expect([...filterReasons(layers, { method: 'auto', minParams: 0, heaviestShare: 0.9 }).keys()].map((l) => l.name)).toEqual(['c', 'd']);
    // Every layer is needed to reach 100%.
    expect(filterReasons(layers, { method: 'auto', minParams: 0, heaviestShare: 1 }).size).toBe(0);
  });

  it('--heaviest N wins over the share', () => {
    const { model, shapes } = pyramid();
    const layers = findLayers(model, shapes);
    const out = filterReasons(layers, { method: 'auto', minParams: 0, heaviest: 1, heaviestShare: 0.95 });
    expect([...out.keys()].map((l) => l.name)).toEqual(['b', 'c', 'd']);
    expect(out.get(layers[1]!)).toBe('not among the 1 layers with the most MACs (--heaviest 1)');
  });

  it('counts params when MACs are unknown, and only the layers the other filters leave', () => {
    const { model } = pyramid();
    const layers = findLayers(model);
    // Equal params: three of four carry 75%, so 95% needs all four.
    expect(filterReasons(layers, { method: 'auto', minParams: 0, heaviestShare: 0.95 }).size).toBe(0);
    // a is excluded; of b, c, d (equal params, ties in graph order) two carry 66.7%.
    const out = filterReasons(layers, { method: 'auto', minParams: 0, heaviestShare: 0.6, exclude: /^a$/ });
    expect([...out.entries()].map(([l, why]) => `${l.name}: ${why}`)).toEqual([
      'a: excluded by --exclude',
      'd: not among the 2 layers carrying 60% of the params (the default with a budget; --heaviest N sets the number)',
    ]);
  });
});
