/**
 * The choices a later rival replaced along auto's comparison stay contenders when latency
 * decides (issue 19): the driver records them (RunContext.contenders), the default run's
 * latency screen times them beside the kept chain and the preferred pass's
 * (method-latency.ts preferFaster), and the layer's report line keeps the timing note
 * once the plan is applied. The layer: a 3x3 kernel b_s·c_y·Σ_{i≤3} d_i,x·a_i,t, exact
 * at Tucker-2 1,3, CP 3 and spatial SVD 1; at rank ratio 0.25, CP beats Tucker-2 6,6 at its
 * size and shrinks to 3, and spatial SVD 1 then beats CP 3 at CP's size. (Under --rank N
 * spatial SVD competes at N only, never within CP N's size on a 3x3 kernel.) The clocks stand in for ORT (no verdict depends
 * on machine speed); the real-ORT run checks only that all three chains were timed together.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { ok } from '../../src/errors.js';
import { Model } from '../../src/graph/graph.js';
import type { ShapeMap } from '../../src/graph/shapes.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import type { ModelProto, NodeProto } from '../../src/onnx/schema.js';
import { optimizeModel, type OptimizeOptions } from '../../src/optimize/driver.js';
import { timeChains, timeRewrite, type ChainsTimer, type LayerTimer } from '../../src/optimize/layer-latency.js';
import type { PlannedContender } from '../../src/optimize/method-latency.js';
import { screenedPlan } from '../../src/optimize/latency-screen.js';
import type { Report } from '../../src/report/report.js';
import { spatialKernel3d } from '../../src/linalg/spatial-svd-3d.js';
import { createRng } from '../../src/util/rng.js';
import { runCli } from '../helpers/cli.js';
import { compareModels, randomFeed } from '../helpers/ort.js';

// The CLI tests below swap the timers the pipeline uses; the others inject theirs.
vi.mock('../../src/optimize/layer-latency.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/optimize/layer-latency.js')>();
  return { ...m, timeRewrite: vi.fn(m.timeRewrite), timeChains: vi.fn(m.timeChains) };
});

const C = 16;
const HW = 10;

/** W[t,s,y,x] = b_s·c_y·Σ_{i≤3} d_i,x·a_i,t: spatial rank 1, CP rank 3, Tucker-2 ranks 1,3. */
function kernel(seed: number): Float32Array {
  const rng = createRng(seed);
  const v = (n: number): number[] => Array.from({ length: n }, () => rng.normal());
  const [b, c] = [v(C), v(3)];
  const d = [v(3), v(3), v(3)];
  const a = [v(C), v(C), v(C)];
  const w = new Float32Array(C * C * 9);
  for (let t = 0; t < C; t++) for (let s = 0; s < C; s++) for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) {
    w[((t * C + s) * 3 + y) * 3 + x] = b[s]! * c[y]! * (d[0]![x]! * a[0]![t]! + d[1]![x]! * a[1]![t]! + d[2]![x]! * a[2]![t]!);
  }
  return w;
}

function oneConv(): { bytes: Uint8Array; shapes: ShapeMap } {
  const m = new ModelBuilder({ opset: 13 });
  const x = m.input('x', [1, C, HW, HW]);
  const p = m.node('Conv', [x, m.init('w', [C, C, 3, 3], kernel(1))], { pads: [1, 1, 1, 1] }, { name: 'p' });
  m.output(p);
  const dims = [1, C, HW, HW];
  return { bytes: encodeModel(m.build()), shapes: new Map([[x, dims], [p, dims]]) };
}

const opts: OptimizeOptions = { method: 'auto', policy: { kind: 'ratio', ratio: 0.25 }, minParams: 0, seed: 0, saves: 'latency' };

/** Chain kinds by their nodes: CP's has a depthwise conv, spatial SVD's two convs, Tucker-2's three. */
const kind = (nodes: readonly NodeProto[]): 'cp' | 'svd' | 'tucker2' => {
  if (nodes.some((n) => n.attribute.some((a) => a.name === 'group' && Number(a.i) > 1))) return 'cp';
  return nodes.length === 2 ? 'svd' : 'tucker2';
};

/** Stand-in clocks: the layer 10 ms; CP's chain `ms.cp`, spatial SVD's `ms.svd`, Tucker-2's `ms.tucker2`. */
function clocks(ms: Record<'cp' | 'svd' | 'tucker2', number>, calls: string[][]): { time: LayerTimer; timeChains: ChainsTimer } {
  return {
    timeChains: async (_m, _layer, chains) => {
      calls.push(chains.map((c) => kind(c.graph!.node)));
      return ok({ originalMs: 10, candidateMs: chains.map((c) => ms[kind(c.graph!.node)]) });
    },
    time: async (_m, _layer, chain) => ok({ originalMs: 10, candidateMs: ms[kind(chain)] }),
  };
}

describe('auto: the choices a later rival replaced are timed beside the kept one', () => {
  it('the driver records each replaced choice along the comparison, and only under auto', () => {
    const { bytes, shapes } = oneConv();
    const contenders = new Map<string, PlannedContender[]>();
    const [rec] = optimizeModel(new Model(decodeModel(bytes)), shapes, { ...opts, decideOnly: true }, undefined, { contenders });
    expect(rec).toMatchObject({ pass: 'conv-spatial-svd', ranks: [1] });
    expect(rec!.note).toMatch(/^tucker2 6,6 err \S+ vs cp 12 err \S+; cp 3 err \S+, the smallest within it; cp 3 err \S+ vs spatial-svd 1 err \S+(;|$)/);
    expect([...contenders]).toEqual([['p', [{ pass: 'conv-tucker2', ranks: [6, 6] }, { pass: 'conv-cp', ranks: [3] }]]]);
    // Another method compares nothing: nothing is recorded.
    const none = new Map<string, PlannedContender[]>();
    optimizeModel(new Model(decodeModel(bytes)), shapes, { ...opts, method: 'tucker2', decideOnly: true }, undefined, { contenders: none });
    expect(none.size).toBe(0);
  });

  it('spatial SVD won on error, but the CP it replaced is timed fastest: the screen keeps CP, the applied record says why', async () => {
    const { bytes, shapes } = oneConv();
    const model = new Model(decodeModel(bytes));
    const calls: string[][] = [];
    const { plan, notes } = await screenedPlan(model, shapes, opts, {}, { threads: 1, ...clocks({ cp: 1, svd: 6, tucker2: 4 }, calls) });
    // One loop of three chains: the kept rival's, the CP it replaced, Tucker-2 at the policy's ranks.
    expect(calls).toEqual([['svd', 'cp', 'tucker2']]);
    const [p] = plan.layers;
    expect(p).toMatchObject({ pass: 'conv-cp', method: 'cp', ranks: [3] });
    expect(p!.skipped).toBeFalsy();
    expect(p!.note).toMatch(/; timed in ORT: spatial-svd 1 6\.00 ms, cp 3 1\.00 ms, tucker2 6,6 4\.00 ms: cp kept, faster$/);
    expect(notes[0]).toBe('auto: 1 layer(s) kept another method\'s chain, timed faster in ORT than the rival that won on error: p (cp 3 1.00 ms, spatial-svd 1 6.00 ms)');
    // The plan applies as decided, and the layer's own record keeps the note of how it was chosen.
    expect(encodeModel(model.proto)).toEqual(bytes);
    const [applied] = optimizeModel(model, shapes, opts, plan);
    expect(applied).toMatchObject({ pass: 'conv-cp', ranks: [3] });
    expect(applied!.note!.startsWith(p!.note!)).toBe(true);
    expect(await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, C, HW, HW], 4) })).toBeLessThan(1e-3);
  });

  it('the kept rival timed fastest: it stays, and the note names all three timings', async () => {
    const { bytes, shapes } = oneConv();
    const calls: string[][] = [];
    const { plan, notes } = await screenedPlan(new Model(decodeModel(bytes)), shapes, opts, {}, { threads: 1, ...clocks({ cp: 5, svd: 2, tucker2: 4 }, calls) });
    expect(calls).toEqual([['svd', 'cp', 'tucker2']]);
    expect(plan.layers[0]).toMatchObject({ pass: 'conv-spatial-svd', ranks: [1] });
    expect(plan.layers[0]!.note).toMatch(/; timed in ORT: spatial-svd 1 2\.00 ms, cp 3 5\.00 ms, tucker2 6,6 4\.00 ms$/);
    expect(notes.some((n) => n.startsWith('auto:'))).toBe(false);
  });

  it('a user\'s plan file is applied without its notes (its edits may have made them stale)', () => {
    const { bytes, shapes } = oneConv();
    const layers = [{ name: 'p', op: 'Conv', weightShape: [], where: '', paramsBefore: 0, paramsAfter: 0, ms: 0, pass: 'conv-cp', ranks: [3], note: 'timed in ORT: cp 3 1.00 ms' }];
    const [fromFile] = optimizeModel(new Model(decodeModel(bytes)), shapes, opts, { version: 1, model: '', policy: 'test', layers, file: 'p.json' });
    expect(fromFile!.note ?? '').not.toMatch(/timed in ORT/);
    const [asValue] = optimizeModel(new Model(decodeModel(bytes)), shapes, opts, { version: 1, model: '', policy: 'test', layers });
    expect(asValue!.note).toMatch(/^timed in ORT: cp 3 1\.00 ms/);
  });
});

/**
 * Two groups of C channels, each group's kernel u1[s,y]·v1[x,t] + 0.1·u2[s,y]·v2[x,t] with
 * random u, v: at rank ratio 0.1 (Tucker-2 3,3), spatial SVD 1 (no more params) comes within
 * Tucker-2 3,3's error, so auto keeps it as the rival and the screen times both.
 */
function groupedConv(): { bytes: Uint8Array; shapes: ShapeMap } {
  const rng = createRng(3);
  const v = (n: number): number[] => Array.from({ length: n }, () => rng.normal());
  const w = new Float32Array(2 * C * C * 9);
  for (let j = 0; j < 2; j++) {
    const [u1, v1, u2, v2] = [v(C * 3), v(3 * C), v(C * 3), v(3 * C)];
    for (let t = 0; t < C; t++) for (let s = 0; s < C; s++) for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) {
      w[(((j * C + t) * C + s) * 3 + y) * 3 + x] = u1[s * 3 + y]! * v1[x * C + t]! + 0.1 * u2[s * 3 + y]! * v2[x * C + t]!;
    }
  }
  const m = new ModelBuilder({ opset: 13 });
  const x = m.input('x', [1, 2 * C, HW, HW]);
  const p = m.node('Conv', [x, m.init('w', [2 * C, C, 3, 3], w)], { pads: [1, 1, 1, 1], group: 2 }, { name: 'g' });
  m.output(p);
  const dims = [1, 2 * C, HW, HW];
  return { bytes: encodeModel(m.build()), shapes: new Map([[x, dims], [p, dims]]) };
}

describe('auto on a grouped conv: spatial SVD per group is timed against Tucker-2 when latency counts', () => {
  /** Grouped chains: spatial SVD's has two convs, Tucker-2's three (every conv grouped). */
  const kindOf = (nodes: readonly NodeProto[]): 'svd' | 'tucker2' => (nodes.length === 2 ? 'svd' : 'tucker2');
  const timers = (ms: Record<'svd' | 'tucker2', number>, calls: string[][]): { time: LayerTimer; timeChains: ChainsTimer } => ({
    timeChains: async (_m, _layer, chains) => {
      calls.push(chains.map((c) => kindOf(c.graph!.node)));
      return ok({ originalMs: 10, candidateMs: chains.map((c) => ms[kindOf(c.graph!.node)]) });
    },
    time: async (_m, _layer, chain) => ok({ originalMs: 10, candidateMs: ms[kindOf(chain)] }),
  });
  const gopts: OptimizeOptions = { ...opts, policy: { kind: 'ratio', ratio: 0.1 } };

  it('Tucker-2 timed faster: the screen keeps it, the note names both timings; spatial SVD timed faster: it stays', async () => {
    const { bytes, shapes } = groupedConv();
    const calls: string[][] = [];
    const slow = await screenedPlan(new Model(decodeModel(bytes)), shapes, gopts, {}, { threads: 1, ...timers({ svd: 6, tucker2: 2 }, calls) });
    expect(calls).toEqual([['svd', 'tucker2']]);
    const [g] = slow.plan.layers;
    expect(g).toMatchObject({ pass: 'conv-tucker2' });
    expect(g!.note).toMatch(/timed in ORT: spatial-svd 1 6\.00 ms, tucker2 \S+ 2\.00 ms: tucker2 kept, faster$/);
    const model = new Model(decodeModel(bytes));
    const [applied] = optimizeModel(model, shapes, gopts, slow.plan);
    expect(applied).toMatchObject({ pass: 'conv-tucker2' });
    // The applied chain computes in ORT what its record says (Tucker-2 3,3 drops part of the 0.1 term).
    const e = await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, 2 * C, HW, HW], 8) });
    expect(e).toBeGreaterThan(0.5 * applied!.relError!);
    expect(e).toBeLessThan(2 * applied!.relError!);

    const fast = await screenedPlan(new Model(decodeModel(bytes)), shapes, gopts, {}, { threads: 1, ...timers({ svd: 2, tucker2: 6 }, []) });
    expect(fast.plan.layers[0]).toMatchObject({ pass: 'conv-spatial-svd', ranks: [1] });
  });
});

describe('auto on a 3-D conv: spatial SVD (kd×1×1 → 1×kh×1 → 1×1×kw) is timed against Tucker-2 when latency counts', () => {
  /** A [12, 12, 3, 3, 3] kernel exact at 3-D spatial SVD ranks [3, 4]. */
  function conv3d(): { bytes: Uint8Array; shapes: ShapeMap } {
    const rng = createRng(9);
    const v = (n: number): number[] => Array.from({ length: n }, () => rng.normal());
    const w = spatialKernel3d(v(3 * 12 * 3), v(4 * 3 * 3), v(12 * 4 * 3), 12, 12, [3, 3, 3], [3, 4]);
    const m = new ModelBuilder({ opset: 13 });
    const x = m.input('x', [1, 12, 5, 5, 5]);
    const p = m.node('Conv', [x, m.init('w', [12, 12, 3, 3, 3], w)], { pads: [1, 1, 1, 1, 1, 1] }, { name: 'c3' });
    m.output(p);
    const dims = [1, 12, 5, 5, 5];
    return { bytes: encodeModel(m.build()), shapes: new Map([[x, dims], [p, dims]]) };
  }
  /** CP's chain has a depthwise conv, Tucker-2's pointwise (1x1x1) ones, spatial SVD's neither. */
  const kindOf = (c: ModelProto): 'cp' | 'svd' | 'tucker2' => {
    if (c.graph!.node.some((n) => n.attribute.some((a) => a.name === 'group' && Number(a.i) > 1))) return 'cp';
    return c.graph!.initializer.some((t) => t.dims.length === 5 && t.dims.slice(2).every((d) => Number(d) === 1)) ? 'tucker2' : 'svd';
  };
  const timers = (ms: Record<'cp' | 'svd' | 'tucker2', number>, calls: string[][]): { timeChains: ChainsTimer; time: LayerTimer } => ({
    timeChains: async (_m, _layer, chains) => {
      calls.push(chains.map(kindOf));
      return ok({ originalMs: 10, candidateMs: chains.map((c) => ms[kindOf(c)]) });
    },
    // The kept chain against the layer: faster, whichever it is.
    time: async () => ok({ originalMs: 10, candidateMs: 1 }),
  });
  const o3: OptimizeOptions = { method: 'auto', policy: { kind: 'ratio', ratio: 0.3 }, minParams: 0, seed: 0, saves: 'latency' };

  it('spatial SVD won on error over CP, which beat Tucker-2: all three timed; Tucker-2 timed faster is kept, spatial SVD timed faster stays', async () => {
    const { bytes, shapes } = conv3d();
    const calls: string[][] = [];
    const slow = await screenedPlan(new Model(decodeModel(bytes)), shapes, o3, {}, { threads: 1, ...timers({ cp: 8, svd: 6, tucker2: 2 }, calls) });
    expect(calls).toEqual([['svd', 'cp', 'tucker2']]);
    expect(slow.plan.layers[0]).toMatchObject({ pass: 'conv-tucker2' });
    expect(slow.plan.layers[0]!.note).toMatch(/timed in ORT: spatial-svd \d+,\d+ 6\.00 ms, cp \d+ 8\.00 ms, tucker2 \d+,\d+ 2\.00 ms: tucker2 kept, faster$/);
    const fast = await screenedPlan(new Model(decodeModel(bytes)), shapes, o3, {}, { threads: 1, ...timers({ cp: 8, svd: 2, tucker2: 6 }, []) });
    expect(fast.plan.layers[0]).toMatchObject({ pass: 'conv-spatial-svd' });
    const model = new Model(decodeModel(bytes));
    const [applied] = optimizeModel(model, shapes, o3, fast.plan);
    expect(applied).toMatchObject({ pass: 'conv-spatial-svd', ranks: fast.plan.layers[0]!.ranks });
    // The applied chain computes in ORT what its record says (auto took the smallest ranks within CP's error).
    const e = await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, 12, 5, 5, 5], 9) });
    expect(e).toBeGreaterThan(0.5 * applied!.relError!);
    expect(e).toBeLessThan(2 * applied!.relError!);
  });
});

describe('through the CLI (the pipeline\'s default latency screen)', () => {
  beforeEach(async () => {
    const real = await vi.importActual<typeof import('../../src/optimize/layer-latency.js')>('../../src/optimize/layer-latency.js');
    vi.mocked(timeRewrite).mockReset().mockImplementation(real.timeRewrite);
    vi.mocked(timeChains).mockReset().mockImplementation(real.timeChains);
  });

  function files(): { input: string; out: string } {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-contenders-'));
    const input = path.join(dir, 'in.onnx');
    writeFileSync(input, oneConv().bytes);
    return { input, out: path.join(dir, 'out.onnx') };
  }

  const args = (input: string, out: string): string[] => ['optimize', input, out, '--method', 'auto', '--rank-ratio', '0.25', '--min-params', '0', '--json'];

  it('CP timed fastest: OUT has CP, and the report\'s line for the layer carries the timings', async () => {
    const { input, out } = files();
    const fake = clocks({ cp: 0.1, svd: 0.6, tucker2: 0.4 }, []);
    vi.mocked(timeChains).mockImplementation(fake.timeChains);
    vi.mocked(timeRewrite).mockImplementation(fake.time);
    const r = await runCli(...args(input, out));
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers.map((l) => [l.name, l.method, l.ranks])).toEqual([['p', 'cp', [3]]]);
    expect(rep.layers[0]!.note).toMatch(/timed in ORT: spatial-svd 1 0\.6000 ms, cp 3 0\.1000 ms, tucker2 6,6 0\.4000 ms: cp kept, faster/);
    expect(rep.verify!.pass).toBe(true);
    expect(await compareModels(readFileSync(input), readFileSync(out), { x: randomFeed([1, C, HW, HW], 6) })).toBeLessThan(1e-3);
  });

  it('real ORT timing: the three chains are timed together and the report line names them', async () => {
    const { input, out } = files();
    const r = await runCli(...args(input, out));
    expect(r.code).toBe(0);
    expect(vi.mocked(timeChains).mock.calls.map((c) => c[2].length)).toEqual([3]);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers[0]!.note).toMatch(/timed in ORT: spatial-svd 1 [0-9.]+ ms, cp 3 [0-9.]+ ms, tucker2 6,6 [0-9.]+ ms/);
    expect(rep.verify!.pass).toBe(true);
    expect(await compareModels(readFileSync(input), readFileSync(out), { x: randomFeed([1, C, HW, HW], 7) })).toBeLessThan(1e-3);
  });
});
