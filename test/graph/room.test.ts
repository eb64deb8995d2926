import { describe, expect, it } from 'vitest';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { shapesFor } from '../../src/graph/layer-shapes.js';
import { layerKind, roomOf } from '../../src/graph/room.js';
import { loadModel } from '../../src/onnx/file.js';
import { buildFeeds, parseShapeArgs } from '../../src/verify/inputs.js';
import { nodeTimesFromEvents, profileNodes } from '../../src/verify/profile.js';
import { createSession } from '../../src/verify/session.js';
import { REAL, REAL_SHAPES } from '../helpers/models.js';

describe('nodeTimesFromEvents', () => {
  it('drops warm-up runs and takes each node\'s median', () => {
    const ev = (name: string, dur: number) => ({ cat: 'Node', name: `${name}_kernel_time`, dur, args: { op_name: 'Conv' } });
    const t = nodeTimesFromEvents([
      ev('a', 1000), ev('b', 7), ev('a', 10), ev('b', 5), ev('a', 30), ev('b', 6), ev('a', 20), ev('b', 4),
      { cat: 'Session', name: 'model_run', dur: 99999 }, { cat: 'Node', name: 'a_fence_before', dur: 3 },
    ], 1);
    expect(t.byNode.get('a')).toBe(20);
    expect(t.byNode.get('b')).toBe(5);
    expect(t.total).toBe(25);
    expect(t.runs).toBe(3);
  });
});

describe('roomOf on a real model', () => {
  it('splits time and MACs by layer kind, and bounds the speed-up by the rewritable share', async () => {
    const loaded = loadModel(REAL.rec);
    try {
      const model = new Model(loaded.model);
      const shapes = parseShapeArgs(REAL_SHAPES.rec);
      if (!shapes.ok) throw shapes.error;
      const sh = await shapesFor(loaded, model, shapes.value, {});
      const layers = findLayers(model, sh.shapes);
      const s = await createSession({ path: REAL.rec });
      if (!s.ok) throw s.error;
      const feeds = buildFeeds(s.value.inputs, { seed: 0, count: 1, shapes: shapes.value });
      await s.value.release();
      if (!feeds.ok) throw feeds.error;
      const times = await profileNodes(REAL.rec, feeds.value.feeds[0]!, { runs: 2 });
      if (!times.ok) throw times.error;

      const room = roomOf(layers, times.value);
      expect(room.basis).toBe('time');
      // Independent count: the kinds add up to every layer, and their times to the layers' nodes.
      expect(room.kinds.reduce((a, k) => a + k.layers, 0)).toBe(layers.length);
      const layerUs = layers.reduce((a, l) => a + (times.value.byNode.get(l.node.name ?? '') ?? 0), 0);
      expect(room.kinds.reduce((a, k) => a + k.us!, 0)).toBeCloseTo(layerUs, 6);
      // rec's convs are named p2o.Conv.N and all profiled: the layers hold most but not all of the time.
      expect(layerUs).toBeGreaterThan(0.3 * times.value.total);
      expect(layerUs).toBeLessThan(times.value.total);
      const rewritable = layers.filter((l) => ['dense kxk conv', '1x1 conv', 'Gemm/MatMul'].includes(layerKind(l)));
      const share = rewritable.reduce((a, l) => a + (times.value.byNode.get(l.node.name ?? '') ?? 0), 0) / times.value.total;
      expect(room.rewritableShare).toBeCloseTo(share, 9);
      expect(room.bound).toBeCloseTo(1 / (1 - share), 9);
      expect(room.kinds.find((k) => k.kind === 'depthwise/grouped conv')?.layers).toBeGreaterThan(0);

      // Without a profile the shares come from MACs.
      const byMacs = roomOf(layers);
      expect(byMacs.basis).toBe('macs');
      expect(byMacs.macs).toBe(layers.reduce((a, l) => a + (l.macs ?? 0), 0));
      expect(byMacs.bound).toBeGreaterThan(1);
    } finally {
      loaded.external.close();
    }
  });
});
