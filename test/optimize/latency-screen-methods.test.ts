/**
 * The default run's latency screen under auto (src/optimize/latency-screen.ts screenedPlan
 * with method-latency.ts preferFaster): a layer where a rival won auto's comparison on
 * error gets the chain timed fastest in ORT among those within that error, and the record
 * says so; a layer with one contender is decided as before. Both through screenedPlan and
 * through the CLI (pipeline.ts), whose report notes it. The clocks stand in for ORT (no
 * verdict depends on machine speed); the real-ORT runs check only that they complete and
 * that OUT computes what IN computes.
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
import type { LayerRecord } from '../../src/optimize/plan.js';
import { timeChains, timeRewrite, type ChainsTimer, type LayerTimer } from '../../src/optimize/layer-latency.js';
import { screenByLatency, screenedPlan } from '../../src/optimize/latency-screen.js';
import type { Report } from '../../src/report/report.js';
import { createRng } from '../../src/util/rng.js';
import { runCli } from '../helpers/cli.js';
import { compareModels, randomFeed } from '../helpers/ort.js';
import { tuckerKernel } from '../helpers/kernels.js';
import { cpKernel } from '../passes/conv-harness.js';

// The CLI tests below swap the timers the pipeline uses; the others inject theirs.
vi.mock('../../src/optimize/layer-latency.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/optimize/layer-latency.js')>();
  return { ...m, timeRewrite: vi.fn(m.timeRewrite), timeChains: vi.fn(m.timeChains) };
});

const C = 16;
const HW = 10;

/** x → conv p (a 3x3 kernel of exact CP rank 3: auto picks CP) → conv q (Tucker ranks 4,4: CP loses, one contender). */
function twoConvs(): { bytes: Uint8Array; shapes: ShapeMap } {
  const m = new ModelBuilder({ opset: 13 });
  const x = m.input('x', [1, C, HW, HW]);
  const p = m.node('Conv', [x, m.init('wp', [C, C, 3, 3], cpKernel(createRng(3), C, C, 9, 3))], { pads: [1, 1, 1, 1] }, { name: 'p' });
  const q = m.node('Conv', [p, m.init('wq', [C, C, 3, 3], tuckerKernel(C, 4, 2))], { pads: [1, 1, 1, 1] }, { name: 'q' });
  m.output(q);
  const dims = [1, C, HW, HW];
  return { bytes: encodeModel(m.build()), shapes: new Map([[x, dims], [p, dims], [q, dims]]) };
}

const opts: OptimizeOptions = { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0, saves: 'latency' };

/** A record without its wall-clock time (`ms`, how long the decision took). */
const untimed = (r: LayerRecord | undefined): Omit<LayerRecord, 'ms'> => { const { ms: _ms, ...rest } = r!; return rest; };

/** Whether chain nodes have a depthwise conv (CP's core). */
const hasDepthwise = (nodes: readonly NodeProto[]): boolean => nodes.some((n) => n.attribute.some((a) => a.name === 'group' && Number(a.i) > 1));
const depthwise = (m: ModelProto): boolean => hasDepthwise(m.graph!.node);

/** Stand-in clocks: every layer 10 ms; chains with a depthwise conv `dw` ms, others 4 ms. */
function clocks(dw: number, calls: { chains: string[]; layers: string[] }): { time: LayerTimer; timeChains: ChainsTimer } {
  return {
    timeChains: async (_m, layer, chains) => {
      calls.chains.push(`${layer.name}:${chains.length}`);
      return ok({ originalMs: 10, candidateMs: chains.map((c) => (depthwise(c) ? dw : 4)) });
    },
    time: async (_m, layer, chain) => {
      calls.layers.push(layer.name);
      return ok({ originalMs: 10, candidateMs: hasDepthwise(chain) ? dw : 4 });
    },
  };
}

describe('latency screen under auto: the fastest of the chains within the error', () => {
  it('CP won on error; timed slower than Tucker-2, Tucker-2 is planned, the record and the notes say so', async () => {
    const { bytes, shapes } = twoConvs();
    const model = new Model(decodeModel(bytes));
    const decided = optimizeModel(model, shapes, { ...opts, decideOnly: true });
    expect(decided.map((r) => [r.name, r.pass])).toEqual([['p', 'conv-cp'], ['q', 'conv-tucker2']]);
    const calls = { chains: [] as string[], layers: [] as string[] };
    const { plan, notes } = await screenedPlan(model, shapes, opts, {}, { threads: 1, ...clocks(9, calls) });
    // Only p has two contenders: its CP and Tucker-2 chains are timed together, once.
    expect(calls.chains).toEqual(['p:2']);
    // The screen then times each kept chain against its layer.
    expect(calls.layers).toEqual(['p', 'q']);
    const [p, q] = plan.layers;
    expect(p).toMatchObject({ pass: 'conv-tucker2', method: 'tucker2', ranks: [3, 3] });
    expect(p!.skipped).toBeFalsy();
    expect(p!.note).toMatch(/timed in ORT: cp 3 9\.00 ms, tucker2 3,3 4\.00 ms: tucker2 kept, faster$/);
    expect(p!.paramsAfter).toBeGreaterThan(decided[0]!.paramsAfter);
    expect(notes[0]).toBe('auto: 1 layer(s) kept another method\'s chain, timed faster in ORT than the rival that won on error: p (tucker2 3,3 4.00 ms, cp 3 9.00 ms)');
    expect(notes[1]).toMatch(/^latency screen: all 2 rewrite\(s\) measured/);
    // q had one contender: its decision is exactly what the screen alone makes of it.
    const alone = await screenByLatency(model, shapes, decided, { threads: 1, seed: 0, ...clocks(9, { chains: [], layers: [] }) });
    expect(untimed(q)).toEqual(untimed(alone.records[1]));
    // The model was left as it was, and the plan applies: Tucker-2 3,3 is exact on p too.
    expect(encodeModel(model.proto)).toEqual(bytes);
    const applied = optimizeModel(model, shapes, opts, plan);
    expect(applied.map((r) => r.pass)).toEqual(['conv-tucker2', 'conv-tucker2']);
    expect(await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, C, HW, HW], 4) })).toBeLessThan(1e-3);
  });

  it('CP timed faster: CP stays, decided as without the timing but for the note', async () => {
    const { bytes, shapes } = twoConvs();
    const model = new Model(decodeModel(bytes));
    const decided = optimizeModel(model, shapes, { ...opts, decideOnly: true });
    const calls = { chains: [] as string[], layers: [] as string[] };
    const { plan, notes } = await screenedPlan(model, shapes, opts, {}, { threads: 1, ...clocks(2, calls) });
    const alone = await screenByLatency(model, shapes, decided, { threads: 1, seed: 0, ...clocks(2, { chains: [], layers: [] }) });
    const { note, ...rest } = untimed(plan.layers[0]);
    const { note: noteAlone, ...restAlone } = untimed(alone.records[0]);
    expect(rest).toEqual(restAlone);
    expect(note).toBe(`${noteAlone}; timed in ORT: cp 3 2.00 ms, tucker2 3,3 4.00 ms`);
    expect(untimed(plan.layers[1])).toEqual(untimed(alone.records[1]));
    expect(notes.some((n) => n.startsWith('auto:'))).toBe(false);
  });

  it('another method than auto: nothing is timed between methods, the plan is the screen\'s alone', async () => {
    const { bytes, shapes } = twoConvs();
    const model = new Model(decodeModel(bytes));
    const cp = { ...opts, method: 'cp' as const };
    const calls = { chains: [] as string[], layers: [] as string[] };
    const { plan } = await screenedPlan(model, shapes, cp, {}, { threads: 1, ...clocks(9, calls) });
    expect(calls.chains).toEqual([]);
    const decided = optimizeModel(model, shapes, { ...cp, decideOnly: true });
    const alone = await screenByLatency(model, shapes, decided, { threads: 1, seed: 0, ...clocks(9, { chains: [], layers: [] }) });
    expect(plan.layers.map(untimed)).toEqual(alone.records.map(untimed));
  });

  it('real ORT timing end to end (only that the methods were timed and the plan applies)', async () => {
    const { bytes, shapes } = twoConvs();
    const model = new Model(decodeModel(bytes));
    const { plan } = await screenedPlan(model, shapes, opts, {}, { threads: 1 });
    expect(plan.layers[0]!.note).toMatch(/timed in ORT: cp 3 [0-9.]+ ms, tucker2 3,3 [0-9.]+ ms/);
    expect(plan.layers[1]!.note ?? '').not.toMatch(/timed in ORT/);
    expect(encodeModel(model.proto)).toEqual(bytes);
    optimizeModel(model, shapes, opts, plan);
    expect(await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, C, HW, HW], 5) })).toBeLessThan(1e-3);
  });
});

describe('the default CLI run under auto (through the pipeline)', () => {
  beforeEach(async () => {
    // Real timers unless a test fakes them.
    const real = await vi.importActual<typeof import('../../src/optimize/layer-latency.js')>('../../src/optimize/layer-latency.js');
    vi.mocked(timeRewrite).mockReset().mockImplementation(real.timeRewrite);
    vi.mocked(timeChains).mockReset().mockImplementation(real.timeChains);
  });

  /** twoConvs written to a file in a fresh directory; returns its path and OUT's. */
  function files(): { input: string; out: string } {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-methods-'));
    const input = path.join(dir, 'in.onnx');
    writeFileSync(input, twoConvs().bytes);
    return { input, out: path.join(dir, 'out.onnx') };
  }

  /** Every chain 0.5x its layer, but chains with a depthwise conv `dw`x (the layers 1 ms). */
  function fake(dw: number): void {
    vi.mocked(timeChains).mockImplementation(async (_m, _l, chains) => ok({ originalMs: 1, candidateMs: chains.map((c) => (depthwise(c) ? dw : 0.5)) }));
    vi.mocked(timeRewrite).mockImplementation(async (_m, _l, chain) => ok({ originalMs: 1, candidateMs: hasDepthwise(chain) ? dw : 0.5 }));
  }

  it('CP timed slower than Tucker-2: OUT has Tucker-2 on p, and the report\'s notes say so', async () => {
    const { input, out } = files();
    fake(0.9);
    const r = await runCli('optimize', input, out, '--method', 'auto', '--energy', '0.999', '--min-params', '0', '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers.map((l) => [l.name, l.method, l.ranks])).toEqual([['p', 'tucker2', [3, 3]], ['q', 'tucker2', [4, 4]]]);
    expect(rep.notes).toContain('auto: 1 layer(s) kept another method\'s chain, timed faster in ORT than the rival that won on error: p (tucker2 3,3 0.5000 ms, cp 3 0.9000 ms)');
    expect(vi.mocked(timeChains).mock.calls.map((c) => c[1].name)).toEqual(['p']);
    expect(rep.verify!.pass).toBe(true);
    expect(await compareModels(readFileSync(input), readFileSync(out), { x: randomFeed([1, C, HW, HW], 6) })).toBeLessThan(1e-3);
  });

  it('CP timed fastest: OUT keeps CP on p, no note about methods', async () => {
    const { input, out } = files();
    fake(0.3);
    const r = await runCli('optimize', input, out, '--method', 'auto', '--energy', '0.999', '--min-params', '0', '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers.map((l) => [l.name, l.method, l.ranks])).toEqual([['p', 'cp', [3]], ['q', 'tucker2', [4, 4]]]);
    expect(rep.notes.some((n) => n.startsWith('auto:'))).toBe(false);
    expect(rep.verify!.pass).toBe(true);
  });

  it('real ORT timing: the run completes and OUT is a valid model computing what IN computes', async () => {
    const { input, out } = files();
    const r = await runCli('optimize', input, out, '--method', 'auto', '--energy', '0.999', '--min-params', '0', '--json');
    expect(r.code).toBe(0);
    expect(vi.mocked(timeChains).mock.calls.map((c) => c[1].name)).toEqual(['p']);
    expect(JSON.parse(r.out).verify.pass).toBe(true);
    expect(await compareModels(readFileSync(input), readFileSync(out), { x: randomFeed([1, C, HW, HW], 7) })).toBeLessThan(1e-3);
  });
});
