/**
 * Plans checked before they are applied: ranks against each layer's range (the report must
 * describe the model that was written), malformed fields refused at parse with a message,
 * and the model fingerprint that ties a plan to the model it was made for.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LrError } from '../../src/errors.js';
import { Model } from '../../src/graph/graph.js';
import { modelFingerprint } from '../../src/graph/summary.js';
import { loadModel } from '../../src/onnx/file.js';
import { checkPlanModel, parsePlan, type PlanFile } from '../../src/optimize/plan.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';

let dir: string;
let wakePlan: PlanFile;
const SVD_LAYER = '/layer1/Gemm'; // Gemm with a 32x2400 weight: ranks 1 to 32

function writePlan(name: string, plan: unknown): string {
  const f = path.join(dir, name);
  writeFileSync(f, typeof plan === 'string' ? plan : JSON.stringify(plan));
  return f;
}

function parseFails(plan: unknown): string {
  try {
    parsePlan(JSON.stringify(plan), 'p.json');
  } catch (e) {
    expect(e).toBeInstanceOf(LrError);
    expect((e as LrError).kind).toBe('parse');
    return (e as LrError).message;
  }
  throw new Error('expected the plan to be refused');
}

function wakeModel(): Model {
  const l = loadModel(REAL.wake);
  l.external.close();
  return new Model(l.model);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-plan-checks-'));
  const r = await runCli('plan', REAL.wake, '--rank', '8');
  expect(r.code, r.err).toBe(0);
  wakePlan = JSON.parse(r.out) as PlanFile;
}, 120_000);

describe('plan ranks against the layer', () => {
  it('plan files carry the fingerprint of their model', () => {
    expect(wakePlan.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect(wakePlan.fingerprint).toBe(modelFingerprint(wakeModel().proto));
    expect(wakePlan.layers.find((l) => l.name === SVD_LAYER)).toMatchObject({ pass: 'gemm-svd', ranks: [8] });
  });

  it('ranks past the layer\'s range are refused with the layer and the range (the report priced 1e9)', async () => {
    const plan = { ...wakePlan, layers: wakePlan.layers.map((l) => (l.name === SVD_LAYER ? { ...l, ranks: [1e9] } : l)) };
    const out = path.join(dir, 'o1.onnx');
    const r = await runCli('optimize', REAL.wake, out, '--plan', writePlan('big.json', plan), '--no-verify');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^onnx-lr: plan .*big\.json: layer \/layer1\/Gemm \(gemm-svd\): rank 1000000000 is out of range: valid ranks are 1 to 32\n$/);
    expect(r.out).toBe('');
  });

  it('a wrong number of ranks for the pass is refused', async () => {
    const plan = { ...wakePlan, layers: wakePlan.layers.map((l) => (l.name === SVD_LAYER ? { ...l, ranks: [8, 8] } : l)) };
    const r = await runCli('optimize', REAL.wake, path.join(dir, 'o2.onnx'), '--plan', writePlan('two.json', plan), '--no-verify');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/layer \/layer1\/Gemm \(gemm-svd\): 2 rank\(s\) \[8, 8\], but gemm-svd takes 1/);
  });

  it('Tucker-2 ranks out of range, or past r1 ≤ r2·K, are refused', async () => {
    // rec has a few full (not depthwise) k×k convs, e.g. 60x480x1x3.
    const p = await runCli('plan', REAL.rec, '--rank', '8', '--method', 'tucker2', '--min-params', '0');
    expect(p.code, p.err).toBe(0);
    const rec = JSON.parse(p.out) as PlanFile;
    const conv = rec.layers.find((l) => l.pass === 'conv-tucker2' && !l.skipped && l.weightShape[1]! >= 16)!;
    expect(conv).toBeDefined();
    const withRanks = (ranks: number[]): PlanFile => ({ ...rec, layers: [{ ...conv, ranks }] });
    const huge = await runCli('optimize', REAL.rec, path.join(dir, 'o3.onnx'), '--plan', writePlan('t1.json', withRanks([1e9, 1e9])), '--no-verify');
    expect(huge.code).toBe(2);
    expect(huge.err).toMatch(/\(conv-tucker2\): r1 \(input side\) 1000000000 is out of range: valid ranks are 1 to \d+/);
    const k = conv.weightShape.slice(2).reduce((a, b) => a * b, 1);
    const skewed = await runCli('optimize', REAL.rec, path.join(dir, 'o4.onnx'), '--plan', writePlan('t2.json', withRanks([Math.min(conv.weightShape[1]!, k + 1), 1])), '--no-verify');
    expect(skewed.code).toBe(2);
    expect(skewed.err).toMatch(new RegExp(`need r1 ≤ r2·${k} and r2 ≤ r1·${k}`));
  }, 120_000);

  it('ranks in range are applied as written, and the report says what the model holds', async () => {
    const plan = { ...wakePlan, layers: wakePlan.layers.map((l) => (l.name === SVD_LAYER ? { ...l, ranks: [32] } : l)) };
    const r = await runCli('optimize', REAL.wake, path.join(dir, 'o5.onnx'), '--plan', writePlan('max.json', plan), '--no-verify', '--json');
    expect(r.code, r.err).toBe(0);
    const rec = (JSON.parse(r.out) as { layers: PlanFile['layers'] }).layers.find((l) => l.name === SVD_LAYER)!;
    expect(rec.ranks).toEqual([32]);
    expect(rec.paramsAfter).toBe(32 * (32 + 2400));
  });
});

describe('parsePlan: malformed fields get a message, not "internal error"', () => {
  const base = { version: 1, model: 'm.onnx', policy: 'p', layers: [] };

  it('a malformed sensitivity field', () => {
    expect(parseFails({ ...base, sensitivity: 5 })).toMatch(/^plan p\.json: "sensitivity" must be an array/);
    expect(parseFails({ ...base, sensitivity: [{}] })).toMatch(/"sensitivity"\[0\] has no "name"/);
    expect(parseFails({ ...base, sensitivity: [{ name: 'a', op: 'Gemm', before: { params: 1, macsPerPosition: 1 } }] })).toMatch(/\(a\) needs a "candidates" array/);
    expect(parseFails({ ...base, sensitivity: [{ name: 'a', op: 'Gemm', before: { params: 'x' }, candidates: [] }] })).toMatch(/"before" as/);
    const cand = { pass: 'gemm-svd', ranks: [2], after: { params: 1, macsPerPosition: 1 }, relError: 0.1, outErr2: 0.01 };
    const layer = { name: 'a', op: 'Gemm', before: { params: 4, macsPerPosition: 4 }, candidates: [cand] };
    expect(parseFails({ ...base, sensitivity: [{ ...layer, candidates: [{ ...cand, ranks: [0] }] }] })).toMatch(/candidates\[0\] \(a\) needs "ranks" as positive integers/);
    expect(parseFails({ ...base, sensitivity: [{ ...layer, candidates: [{ ...cand, outErr2: 'big' }] }] })).toMatch(/"relError" and "outErr2" as numbers/);
    expect(parseFails({ ...base, sensitivity: [layer, layer] })).toMatch(/names layer a a second time/);
    // Infinite errors were written as null: they read back as Infinity.
    const ok = parsePlan(JSON.stringify({ ...base, sensitivity: [{ ...layer, candidates: [{ ...cand, outErr2: null }] }] }), 'p.json');
    expect(ok.sensitivity![0]!.candidates[0]!.outErr2).toBe(Infinity);
  });

  it('layers: duplicates, non-integer and unsafe ranks', () => {
    const l = { name: 'a', pass: 'gemm-svd', ranks: [2] };
    expect(parseFails({ ...base, layers: [l, l] })).toMatch(/layer a appears twice/);
    expect(parseFails({ ...base, layers: [{ ...l, ranks: [2.5] }] })).toMatch(/needs "ranks" as positive integers/);
    expect(parseFails({ ...base, layers: [{ ...l, ranks: [1e300] }] })).toMatch(/needs "ranks" as positive integers/);
    expect(parseFails({ ...base, layers: [{ ...l, ranks: [] }] })).toMatch(/needs "ranks" as positive integers/);
    expect(parseFails({ ...base, layers: [null] })).toMatch(/layers\[0\] has no "name"/);
  });

  it('the CLI refuses a malformed sensitivity field before any work', async () => {
    const f = writePlan('bad-sens.json', { ...wakePlan, sensitivity: [{ name: 'x' }] });
    const r = await runCli('optimize', REAL.wake, path.join(dir, 'o6.onnx'), '--plan', f, '--target-params', '0.5', '--no-verify');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^onnx-lr: plan .*bad-sens\.json: "sensitivity"\[0\] \(x\) has no "op"\n$/);
  });

  it('a budgeted report\'s fingerprint (input side) is read as the plan\'s', () => {
    const p = parsePlan(JSON.stringify({ ...base, input: { fingerprint: 'abcdef0123456789' } }), 'r.json');
    expect(p.fingerprint).toBe('abcdef0123456789');
    expect(p.file).toBe('r.json');
  });
});

describe('checkPlanModel: the plan against the model it is applied to', () => {
  it('a plan of this model passes without notes', () => {
    expect(checkPlanModel({ ...wakePlan, file: 'w.json' }, wakeModel())).toEqual([]);
  });

  it('a plan made for another model is refused unless forced', () => {
    const other = { ...wakePlan, file: 'w.json', fingerprint: '0000000000000000' };
    expect(() => checkPlanModel(other, wakeModel())).toThrow(/^plan w\.json was made for another model \(its fingerprint 0000000000000000, this model's [0-9a-f]{16}\): make a plan for this model, or use --force/);
    const notes = checkPlanModel(other, wakeModel(), { force: true });
    expect(notes).toEqual([expect.stringMatching(/^warning: plan w\.json was made for another model .*applied because of --force$/)]);
  });

  it('a plan without a fingerprint (older versions) is accepted with a note; missing layers get one each', () => {
    const { fingerprint: _, ...old } = wakePlan;
    const ghost = { ...wakePlan.layers[0]!, name: 'ghost' };
    const notes = checkPlanModel({ ...old, file: 'old.json', layers: [...old.layers, ghost] }, wakeModel());
    expect(notes).toEqual([
      'plan old.json carries no model fingerprint (made by an older onnx-lr): not checked against this model',
      'warning: plan old.json names layer ghost, which the model does not have: ignored',
    ]);
  });
});

describe('optimize --plan with the plan checked against the model (pipeline)', () => {
  it('a plan for another model is refused, exit 2, unless --force', async () => {
    const p = await runCli('plan', REAL.cls, '--rank', '8', '--heaviest', '1');
    expect(p.code, p.err).toBe(0);
    const f = writePlan('cls-plan.json', p.out);
    const out = path.join(dir, 'o7.onnx');
    const r = await runCli('optimize', REAL.wake, out, '--plan', f, '--no-verify');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^onnx-lr: plan .*cls-plan\.json was made for another model .*use --force to apply it anyway\n$/);
    const forced = await runCli('optimize', REAL.wake, out, '--plan', f, '--no-verify', '--force', '--json');
    expect(forced.code, forced.err).toBe(0);
    const notes = (JSON.parse(forced.out) as { notes: string[] }).notes;
    expect(notes.some((n) => /was made for another model.*--force/.test(n))).toBe(true);
    expect(notes.filter((n) => /names layer .* which the model does not have/.test(n)).length).toBeGreaterThan(0);
  }, 120_000);
});
