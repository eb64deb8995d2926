import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import type { Report } from '../../src/report/report.js';
import type { PlanFile } from '../../src/optimize/plan.js';
import { REAL, realModelArgs, type RealName } from '../helpers/models.js';
import { nonProgress, runCli } from '../helpers/cli.js';
import { decodeModel } from '../../src/onnx/codec.js';
import type { GraphProto } from '../../src/onnx/schema.js';

const run = runCli;
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'onnx-lr-opt-'));
const NAMES = Object.keys(REAL) as RealName[];

/** Names of the nodes of a graph and of all its subgraphs. */
const nodeNames = (g: GraphProto): string[] =>
  g.node.flatMap((n) => [n.name ?? '', ...n.attribute.flatMap((a) => [...(a.g ? [a.g] : []), ...a.graphs]).flatMap(nodeNames)]);

/**
 * Settings under which each model has layers to rewrite: the defaults (energy 0.999) where
 * they rewrite some; cls and wake keep every layer at the defaults, so a default run of
 * them only shows that an unchanged copy verifies.
 */
const REWRITING: Record<RealName, string[]> = { det: [], rec: [], vad: [], cls: ['--energy', '0.95'], wake: ['--energy', '0.995'] };

describe('optimize on the real models', () => {
  for (const name of NAMES) {
    const settings = REWRITING[name];
    it(`${settings.length ? settings.join(' ') : 'defaults'}: layers are rewritten, ORT loads OUT, the default check passes, params drop: ${name}`, async () => {
      const dir = tmp();
      const out = path.join(dir, 'out.onnx');
      const before = readFileSync(REAL[name]);
      const r = await run('optimize', REAL[name], out, ...realModelArgs(name, dir), ...settings, '--json', '--no-latency', '--report', path.join(dir, 'r.json'));
      // No warning or error; a progress line may print if the run passes 10 s.
      expect(nonProgress(r.err)).toEqual([]);
      expect(r.code).toBe(0);
      const rep = JSON.parse(r.out) as Report;
      expect(JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8'))).toEqual(rep);
      expect(rep.verify!.pass).toBe(true);
      expect(rep.verify!.outputs.every((o) => o.cosine >= 0.99)).toBe(true);
      const rewritten = rep.layers.filter((l) => !l.skipped);
      expect(rewritten.length).toBeGreaterThan(0);
      expect(rep.output.params).toBeLessThan(rep.input.params);
      // Each rewrite replaces one node by two (or three): the op histogram shows it.
      expect(rep.output.ops).not.toEqual(rep.input.ops);
      // OUT holds the chains the report names (vad's inside its If branches).
      const nodes = new Set(nodeNames(decodeModel(new Uint8Array(readFileSync(out))).graph!));
      for (const l of rewritten) for (const n of l.nodes!) expect(nodes.has(n), n).toBe(true);
      for (const l of rep.layers) if (l.skipped) expect(l.reason).toBeTruthy();
      await expect(ort.InferenceSession.create(out)).resolves.toBeTruthy();
      // The input file is never modified.
      expect(readFileSync(REAL[name]).equals(before)).toBe(true);
    });

    it(`a forced aggressive setting fails the check with exit code 1 and still writes OUT: ${name}`, async () => {
      const dir = tmp();
      const out = path.join(dir, 'out.onnx');
      // The wake-word head ends in a saturated sigmoid on random inputs, so cosine cannot
      // see the damage there: a tight elementwise tolerance does.
      const strict = name === 'wake' ? ['--atol', '1e-6', '--rtol', '0'] : [];
      const r = await run('optimize', REAL[name], out, ...realModelArgs(name, dir), '--rank', '1', '--min-params', '0', '--no-latency', ...strict);
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/FAIL/);
      expect(existsSync(out)).toBe(true);
    });
  }

  it('prints the before/after table with op-count diff and latency', async () => {
    const dir = tmp();
    const r = await run('optimize', REAL.wake, path.join(dir, 'o.onnx'), '--energy', '0.995', '--save', 'params');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/op counts: MatMul 0->1 {2}\(nodes \+1\)/);
    expect(r.out).toMatch(/latency ORT-node: original [\d.]+ ms .* speed-up [\d.]+x/);
    expect(r.out).toMatch(/verification .* PASS/);
  });

  it('plan, edit, and optimize --plan apply the decisions exactly', async () => {
    const dir = tmp();
    const p = await run('plan', REAL.rec, ...realModelArgs('rec', dir), '--energy', '0.99');
    expect(p.code).toBe(0);
    const plan = JSON.parse(p.out) as PlanFile;
    const chosen = plan.layers.filter((l) => !l.skipped);
    expect(chosen.length).toBeGreaterThan(1);
    // Edit: keep only the first decision and lower its rank.
    const edited: PlanFile = { ...plan, layers: [{ ...chosen[0], ranks: chosen[0].ranks!.map((r) => Math.max(1, r - 3)) }] };
    const planPath = path.join(dir, 'plan.json');
    writeFileSync(planPath, JSON.stringify(edited));
    const r = await run('optimize', REAL.rec, path.join(dir, 'o.onnx'), ...realModelArgs('rec', dir), '--plan', planPath, '--json', '--no-verify');
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    const done = rep.layers.filter((l) => !l.skipped);
    expect(done.map((l) => [l.name, l.ranks])).toEqual([[chosen[0].name, edited.layers[0].ranks]]);
  });

  it('the same input, options and seed give byte-identical output', async () => {
    const dir = tmp();
    const a = path.join(dir, 'a.onnx');
    const b = path.join(dir, 'b.onnx');
    for (const o of [a, b]) expect((await run('optimize', REAL.rec, o, ...realModelArgs('rec', dir), '--energy', '0.99', '--no-verify')).code).toBe(0);
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
  });

  it('a bad plan gets a one-line error and exit 2', async () => {
    const dir = tmp();
    const planPath = path.join(dir, 'plan.json');
    writeFileSync(planPath, '{"layers": [{"name": "x", "pass": "gemm-svd", "ranks": [0]}]}');
    const r = await run('optimize', REAL.wake, path.join(dir, 'o.onnx'), '--plan', planPath);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/ranks/);
    expect(existsSync(path.join(dir, 'o.onnx'))).toBe(false);
  });
});
