/**
 * Defaults never make a model slower, and the flags that made ISNet's number are
 * automatic (issue 18 part 3), through the CLI: the default run keeps only rewrites
 * measured faster in ORT (`--save params` keeps every smaller one), and a budget saves
 * latency, on ranks on this CPU's conv block grid, over the layers carrying 95% of the
 * MACs, each default said in the notes. Per-layer timings are faked (no verdict may depend
 * on this machine's speed); the models written are checked in ORT.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { ok } from '../../src/errors.js';
import { writeNpy } from '../../src/io/npy.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { timeChains, timeRewrite } from '../../src/optimize/layer-latency.js';
import type { Report } from '../../src/report/report.js';
import { createRng } from '../../src/util/rng.js';
import { machineNchwcBlock } from '../../src/verify/cpu-block.js';
import { runCli } from '../helpers/cli.js';
import { compareModels, randomFeed } from '../helpers/ort.js';
import { tuckerKernel } from '../helpers/kernels.js';

vi.mock('../../src/optimize/layer-latency.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/optimize/layer-latency.js')>();
  return { ...m, timeRewrite: vi.fn(m.timeRewrite), timeChains: vi.fn(m.timeChains) };
});

const C = 32;
const HW = 12;


/** x → a → Relu → b → Relu → c: 3x3 convs of Tucker ranks 6, 5, 4, written to a file. */
function threeConvs(dir: string): string {
  const m = new ModelBuilder({ opset: 13 });
  let x = m.input('x', [1, C, HW, HW]);
  for (const [i, name] of ['a', 'b', 'c'].entries()) {
    if (i > 0) x = m.node('Relu', [x]);
    x = m.node('Conv', [x, m.init(`w${name}`, [C, C, 3, 3], tuckerKernel(C, 6 - i, i + 1))], { pads: [1, 1, 1, 1] }, { name });
  }
  m.output(x, [1, C, HW, HW]);
  const file = path.join(dir, 'in.onnx');
  writeFileSync(file, encodeModel(m.build()));
  return file;
}

/** Chains of the named layers run 1.3x their layer's time, the others 0.5x (the default run's screen times one chain, a budget's sensitivity all of a layer's). */
function fakeTimings(slower: readonly string[]): void {
  const ms = (name: string): number => (slower.includes(name) ? 1.3 : 0.5);
  vi.mocked(timeRewrite).mockImplementation(async (_model, layer) => ok({ originalMs: 1, candidateMs: ms(layer.name) }));
  vi.mocked(timeChains).mockImplementation(async (_model, layer, chains) => ok({ originalMs: 1, candidateMs: chains.map(() => ms(layer.name)) }));
}

const timedLayers = (): string[] => [...vi.mocked(timeRewrite).mock.calls, ...vi.mocked(timeChains).mock.calls].map((c) => c[1].name);

describe('the default run keeps only rewrites measured faster', () => {
  beforeEach(() => { vi.mocked(timeRewrite).mockClear(); vi.mocked(timeChains).mockClear(); });

  it('drops the chain measured slower, keeps the faster ones, and OUT verifies in ORT', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-screen-'));
    const input = threeConvs(dir);
    const out = path.join(dir, 'out.onnx');
    fakeTimings(['b']);
    const r = await runCli('optimize', input, out, '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(timedLayers()).toEqual(['a', 'b', 'c']);
    const byName = new Map(rep.layers.map((l) => [l.name, l]));
    expect(byName.get('b')!.skipped).toBe(true);
    expect(byName.get('b')!.reason).toBe(`measured slower in ORT at 1x${C}x${HW}x${HW}: 1.00 ms → 1.30 ms`);
    expect(byName.get('a')!.skipped).toBeUndefined();
    expect(byName.get('c')!.skipped).toBeUndefined();
    expect(rep.notes.filter((n) => n.startsWith('latency screen: 1 of 3 rewrite(s) dropped'))).toHaveLength(1);
    expect(rep.timings!.screen).toBeGreaterThanOrEqual(0);
    expect(rep.verify!.pass).toBe(true);
    // OUT: a and c as chains, b as it was, computing what IN computes.
    expect(await compareModels(readFileSync(input), readFileSync(out), { x: randomFeed([1, C, HW, HW], 3) })).toBeLessThan(1e-3);
  });

  it('with --calib the screened decisions are fitted anchored, the dropped layer left alone', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-screen-'));
    const input = threeConvs(dir);
    const rng = createRng(4);
    const calib = path.join(dir, 'calib.npy');
    writeNpy(calib, { dtype: 'f4', shape: [8, C, HW, HW], data: Float32Array.from({ length: 8 * C * HW * HW }, () => rng.normal()) });
    fakeTimings(['a']);
    const r = await runCli('optimize', input, path.join(dir, 'out.onnx'), '--calib', calib, '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers.filter((l) => !l.skipped).map((l) => l.name)).toEqual(['b', 'c']);
    expect(rep.layers.find((l) => l.name === 'a')!.reason).toMatch(/^measured slower in ORT/);
    expect(rep.notes.join('\n')).toMatch(/anchored fitting: 2 layer\(s\) fitted/);
  });

  it('--save params keeps every rewrite that lowers params and MACs, timing none', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-screen-'));
    fakeTimings(['a', 'b', 'c']);
    const r = await runCli('optimize', threeConvs(dir), path.join(dir, 'out.onnx'), '--save', 'params', '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers.filter((l) => !l.skipped).map((l) => l.name)).toEqual(['a', 'b', 'c']);
    expect(timedLayers()).toEqual([]);
    expect(rep.notes.some((n) => n.startsWith('latency screen'))).toBe(false);
  });

  it('with --no-latency nothing is timed: the params-and-MACs rule alone, and a note says so', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-screen-'));
    fakeTimings(['a', 'b', 'c']);
    const r = await runCli('optimize', threeConvs(dir), path.join(dir, 'out.onnx'), '--no-latency', '--json');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.layers.filter((l) => !l.skipped).map((l) => l.name)).toEqual(['a', 'b', 'c']);
    expect(timedLayers()).toEqual([]);
    expect(rep.notes.join('\n')).toMatch(/^rewrites kept when they lower params and MACs, not timed in ORT: latency is not measured \(--no-latency or --no-verify/m);
  });

  it('plan prints the decisions untimed (they are applied as written); --save latency screens them', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-screen-'));
    const input = threeConvs(dir);
    fakeTimings(['a']);
    const plain = await runCli('plan', input);
    expect(plain.code).toBe(0);
    expect(timedLayers()).toEqual([]);
    expect((JSON.parse(plain.out) as { layers: { name: string; skipped?: boolean }[] }).layers.filter((l) => !l.skipped).map((l) => l.name)).toEqual(['a', 'b', 'c']);
    const screened = await runCli('plan', input, '--save', 'latency');
    expect(screened.code).toBe(0);
    expect(timedLayers()).toEqual(['a', 'b', 'c']);
    const layers = (JSON.parse(screened.out) as { layers: { name: string; skipped?: boolean; reason?: string }[] }).layers;
    expect(layers.find((l) => l.name === 'a')!.reason).toMatch(/^measured slower in ORT/);
  });

  it('--save is refused with budgets that name their unit', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-screen-'));
    const r = await runCli('optimize', threeConvs(dir), path.join(dir, 'out.onnx'), '--target-params', '0.5', '--save', 'latency');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^onnx-lr: --save goes with --max-error or no budget/m);
  });

  it('--help says so, and names the budget defaults', async () => {
    const r = await runCli('optimize', '--help');
    const help = r.out.replace(/\s+/g, ' ');
    expect(help).toMatch(/--save U what to save: params, macs or latency\. With --max-error, the unit the allocation saves/);
    expect(help).toMatch(/Without a budget, latency keeps only rewrites measured at least 5% faster than their layer in ORT/);
    expect(help).toMatch(/params or macs keeps every rewrite that lowers both params and MACs, faster or not\. Default latency, or params with --no-latency or --no-verify/);
    expect(help).toMatch(/--heaviest N .*default with a budget that saves MACs or latency: the layers carrying 95% of the MACs .*budgets that save params consider every layer/);
    expect(help).toMatch(/--align N .*16 with AVX-512, 8 on other x86-64 CPUs/);
    expect(help).toMatch(/--threads N .*per-layer timings/);
  });
});

describe('budget defaults', () => {
  beforeEach(() => { vi.mocked(timeRewrite).mockClear(); vi.mocked(timeChains).mockClear(); });

  it('--max-error saves latency on the CPU block grid over the layers carrying 95% of the MACs, and the notes say so', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-budget-'));
    fakeTimings([]);
    const r = await runCli('optimize', threeConvs(dir), path.join(dir, 'out.onnx'), '--max-error', 'cosine:0.99', '--json');
    expect(r.code).toBeLessThan(2);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.budget!.unit).toMatch(/saving latency$/);
    // Candidates were timed (sensitivity with latency), at ranks on the grid.
    expect(timedLayers().length).toBeGreaterThan(0);
    const notes = rep.notes.join('\n');
    expect(notes).toMatch(/--max-error saves latency by default/);
    // Three equal layers: all three are needed for 95% of the MACs.
    expect(notes).toMatch(/budget considers the 3 of 3 layers carrying 95% of the MACs/);
    const block = machineNchwcBlock();
    if (block !== undefined) {
      expect(notes).toContain(`candidate ranks rounded up to multiples of ${block}`);
      const rewritten = rep.layers.filter((x) => !x.skipped);
      expect(rewritten.length).toBeGreaterThan(0);
      for (const l of rewritten) for (const k of l.ranks!) expect(k % block).toBe(0);
    }
  });

  it('--save params with a budget saves params and times nothing; --heaviest N wins over the share', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-budget-'));
    fakeTimings([]);
    const r = await runCli('optimize', threeConvs(dir), path.join(dir, 'out.onnx'), '--max-error', 'cosine:0.99', '--save', 'params', '--heaviest', '1', '--json');
    expect(r.code).toBeLessThan(2);
    const rep = JSON.parse(r.out) as Report;
    expect(rep.budget!.unit).toMatch(/saving params$/);
    expect(timedLayers()).toEqual([]);
    expect(rep.notes.join('\n')).not.toMatch(/saves latency by default|carrying 95%/);
    expect(rep.layers.find((l) => l.name === 'c')!.reason).toBe('not among the 1 layers with the most MACs (--heaviest 1)');
  });

  it('a budget that saves params considers every layer: no automatic share', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-budget-'));
    fakeTimings([]);
    for (const args of [['--max-error', 'cosine:0.99', '--save', 'params'], ['--target-params', '0.8']]) {
      const r = await runCli('optimize', threeConvs(dir), path.join(dir, 'out.onnx'), ...args, '--json');
      expect(r.code, r.err).toBeLessThan(2);
      const rep = JSON.parse(r.out) as Report;
      expect(rep.notes.join('\n')).not.toMatch(/carrying 95%/);
      expect(rep.layers.some((l) => /layers carrying/.test(l.reason ?? ''))).toBe(false);
    }
  });
});
