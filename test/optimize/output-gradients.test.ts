/**
 * Output sensitivities from backward runs (src/optimize/output-gradients.ts) inside
 * measureOutputSensitivity: where the gradient stops, the layers upstream go to finite
 * differences with a note; a layer whose output is both judged and read downstream gets
 * both parts; values of other types (shapes) carry none.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { runAll } from '../../src/optimize/output-error.js';
import { measureOutputSensitivity } from '../../src/optimize/output-sensitivity.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds } from '../../src/verify/tensor.js';

const rng = createRng(17);
const randw = (n: number): number[] => Array.from({ length: n }, () => rng.normal());
const feed = (seed: number, dims = [1, 4, 5, 5]): Feeds => {
  const r = createRng(seed);
  return { x: { type: 'float32', dims, data: Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => r.normal()) } };
};

describe('output sensitivities from gradients', () => {
  it('a node without a product sends the layers upstream of it to finite differences, with the reason; the layers after it keep their gradients', async () => {
    const b = new ModelBuilder();
    const x = b.input('x', [1, 4, 5, 5]);
    const c1 = b.node('Conv', [x, b.init('w1', [6, 4, 1, 1], randw(24))], {}, { name: 'c1' });
    const n = b.node('LRN', [c1], { size: 3 });
    const c2 = b.node('Conv', [n, b.init('w2', [6, 6, 1, 1], randw(36))], {}, { name: 'c2' });
    b.output(b.node('Conv', [b.node('Relu', [c2]), b.init('w3', [3, 6, 1, 1], randw(18))], {}, { name: 'c3' }));
    const model = new Model(b.build());
    const layers = findLayers(model).filter((l) => l.name !== 'c3');
    const { sensitivity, notes } = await measureOutputSensitivity(model, undefined, layers, [feed(1)]);
    expect([...sensitivity.keys()].sort()).toEqual(['c1', 'c2']);
    expect(notes[0]).toMatch(/^output weights: sensitivities of 1 layer\(s\) from gradients \(\d+ backward run\(s\) on 1 calibration feed\(s\)\)$/);
    expect(notes[1]).toMatch(/^output weights: 1 layer\(s\) without an exact gradient, measured by finite differences \(no gradient through LRN at /);
    expect(notes.at(-1)).toBe('output weights: sensitivities of 1 layer(s) measured by finite differences (6 probe runs on 1 calibration feed(s))');
    // The default (gradients only): c1 stays unweighted, and the note says how to measure it.
    const grads = await measureOutputSensitivity(model, undefined, layers, [feed(1)], { method: 'gradients' });
    expect([...grads.sensitivity.keys()]).toEqual(['c2']);
    expect(grads.sensitivity.get('c2')).toEqual(sensitivity.get('c2'));
    expect(grads.notes[1]).toMatch(/^output weights: 1 layer\(s\) without an exact gradient fitted unweighted \(no gradient through LRN at .*; --output-aware measures them by finite differences\)$/);
    expect(grads.notes).toHaveLength(2);
  });

  it('a layer whose output is judged and also read downstream: h_c = positions·(1/‖y₁‖² + ‖V[:, c]‖²/‖y₂‖²) on a linear tail', async () => {
    const b = new ModelBuilder();
    const x = b.input('x', [1, 4, 5, 5]);
    const z = b.node('Conv', [x, b.init('w1', [3, 4, 1, 1], randw(12))], {}, { name: 'c1' });
    const v = randw(6);
    const y2 = b.node('Conv', [z, b.init('v', [2, 3, 1, 1], v)], {}, { name: 'c2' });
    b.output(z);
    b.output(y2);
    const model = new Model(b.build());
    const f = feed(4);
    const ys = await runAll({ bytes: encodeModel(model.proto) }, [f]);
    if (!ys.ok) throw ys.error;
    const energy = (o: string): number => (ys.value[0]![o]!.data as Float32Array).reduce((a, t) => a + t * t, 0);
    const { sensitivity } = await measureOutputSensitivity(model, undefined, findLayers(model).filter((l) => l.name === 'c1'), [f]);
    const h = sensitivity.get('c1')!;
    for (let c = 0; c < 3; c++) {
      const want = 25 * (1 / energy(z) + (v[c]! ** 2 + v[3 + c]! ** 2) / energy(y2));
      expect(Math.abs(h[c]! - want) / want).toBeLessThan(0.2);
    }
    // Judged on y₂ alone (--outputs), only the downstream part counts.
    const only = await measureOutputSensitivity(model, undefined, findLayers(model).filter((l) => l.name === 'c1'), [f], { outputs: [y2] });
    for (let c = 0; c < 3; c++) {
      const want = (25 * (v[c]! ** 2 + v[3 + c]! ** 2)) / energy(y2);
      expect(Math.abs(only.sensitivity.get('c1')![c]! - want) / want).toBeLessThan(0.2);
    }
  });

  it('integer values computed from a layer output (its Shape feeding a Reshape) carry no gradient and stop nothing', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', ['N', 4, 5, 5]);
    const z = b.node('Conv', [x, b.init('w1', [4, 4, 1, 1], randw(16))], {}, { name: 'c1' });
    const flat = b.node('Flatten', [b.node('Relu', [z])]);
    b.output(b.node('Reshape', [b.node('MatMul', [flat, b.init('m', [100, 100], randw(10000))], {}, { name: 'mm' }), b.node('Shape', [z])]));
    const model = new Model(b.build());
    const { sensitivity, notes } = await measureOutputSensitivity(model, undefined, findLayers(model), [feed(7, [2, 4, 5, 5])]);
    expect([...sensitivity.keys()].sort()).toEqual(['c1', 'mm']);
    expect(notes).toEqual([expect.stringMatching(/^output weights: sensitivities of 2 layer\(s\) from gradients \(\d+ backward run\(s\) on 1 calibration feed\(s\)\)$/)]);
    expect(sensitivity.get('c1')).toHaveLength(4);
    expect(sensitivity.get('mm')).toHaveLength(100);
  });
});
