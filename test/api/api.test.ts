/**
 * The library (src/index.ts) against the command line on real models: the same defaults
 * and the same bytes out, paths and bytes alike, and expected failures as LrError codes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { inspect, loadModel, LrError, optimize, plan, saveModel, verify, type Report } from '../../src/index.js';
import { calibFile } from '../helpers/calib.js';
import { withoutRunMetadata } from '../helpers/metadata.js';
import { runCli } from '../helpers/cli.js';
import { CLS, DEEPA, removeTmpDirs, tmpDir } from '../onnx/helpers.js';

afterAll(removeTmpDirs);

/**
 * The parts of a report that do not depend on machine speed or on file names; nor on
 * byte counts, which the command line OUT records (the CLI's alone) changes.
 */
function stable(r: Report): unknown {
  return JSON.parse(JSON.stringify(r, (k, v) => (['seconds', 'timings', 'latency', 'latencyWeb', 'ms', 'file', 'room', 'bytes'].includes(k) ? undefined : v)));
}

async function rejection(p: Promise<unknown>): Promise<LrError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(LrError);
  return e as LrError;
}

describe('library API', () => {
  it('optimize gives the same model bytes and report as `onnx-lr optimize` with the same options', async () => {
    const dir = tmpDir();
    const viaCli = path.join(dir, 'cli.onnx');
    const viaApi = path.join(dir, 'api.onnx');
    const cli = await runCli('optimize', CLS, viaCli, '--shape', 'x:1x3x48x192', '--max-error', 'cosine:0.995', '--save', 'params', '--json');
    expect(cli.code, cli.err).toBe(0);
    const api = await optimize(CLS, { output: viaApi, shapes: { x: [1, 3, 48, 192] }, maxError: 'cosine:0.995', save: 'params' });
    expect(api.pass).toBe(true);
    // The command line OUT records is the CLI's alone.
    expect(withoutRunMetadata(viaApi, /^onnx-lr\.command$/).equals(withoutRunMetadata(viaCli, /^onnx-lr\.command$/))).toBe(true);
    expect(stable(api.report)).toEqual(stable(JSON.parse(cli.out) as Report));
    expect(api.report.layers.filter((l) => !l.skipped).length).toBeGreaterThan(0);
  });

  it('workThreads: statistics, sensitivity and budget runs on 2 ORT threads give the same model bytes as on 1; a bad count is a usage error', async () => {
    const dir = tmpDir();
    const calib = calibFile(dir, [4, 3, 48, 192], 11);
    const base = { shapes: { x: [1, 3, 48, 192] }, maxError: 'cosine:0.995', save: 'params' as const, calib, verify: false };
    const one = await optimize(CLS, { ...base, output: path.join(dir, 'one.onnx') });
    const two = await optimize(CLS, { ...base, output: path.join(dir, 'two.onnx'), workThreads: 2 });
    expect(one.report.layers.filter((l) => !l.skipped).length).toBeGreaterThan(0);
    expect(withoutRunMetadata(path.join(dir, 'two.onnx')).equals(withoutRunMetadata(path.join(dir, 'one.onnx')))).toBe(true);
    expect(stable(two.report)).toEqual(stable(one.report));
    expect((await rejection(optimize(CLS, { ...base, workThreads: 0 }))).message).toMatch(/^--work-threads/);
  });

  it('calibration and held-out data through typed settings: the same model and report as --calib/--verify-data; a sample count without its data is a usage error', async () => {
    const dir = tmpDir();
    const calib = calibFile(dir, [4, 3, 48, 192], 7);
    const viaCli = path.join(dir, 'cli.onnx');
    const viaApi = path.join(dir, 'api.onnx');
    const cli = await runCli('optimize', CLS, viaCli, '--shape', 'x:1x3x48x192', '--rank-ratio', '0.5', '--save', 'params', '--calib', calib, '--verify-data', calib, '--verify-samples', '2', '--json');
    expect(cli.code, cli.err).toBeLessThan(2);
    const api = await optimize(CLS, { output: viaApi, shapes: { x: [1, 3, 48, 192] }, rankRatio: 0.5, save: 'params', calib, verifyData: calib, verifySamples: 2 });
    expect(api.report.calibration).toMatch(/4 samples/);
    // The command line OUT records is the CLI's alone.
    expect(withoutRunMetadata(viaApi, /^onnx-lr\.command$/).equals(withoutRunMetadata(viaCli, /^onnx-lr\.command$/))).toBe(true);
    expect(stable(api.report)).toEqual(stable(JSON.parse(cli.out) as Report));
    expect((await rejection(optimize(CLS, { shapes: { x: [1, 3, 48, 192] }, calibSamples: 2 }))).message).toBe('--calib-samples needs --calib');
    expect((await rejection(optimize(CLS, { shapes: { x: [1, 3, 48, 192] }, calib, resize: [0, 4] }))).message).toMatch(/^--resize expects HxW/);
  });

  it('with no options, resolves the defaults the command line does (policy, threshold, seed, inputs, layers considered)', async () => {
    const dir = tmpDir();
    const cli = await runCli('optimize', DEEPA, path.join(dir, 'cli.onnx'), '--json');
    expect(cli.code, cli.err).toBe(0);
    const c = JSON.parse(cli.out) as Report;
    const a = (await optimize(DEEPA, { output: path.join(dir, 'api.onnx') })).report;
    expect(a.policy).toBe(c.policy);
    expect(a.policy).toMatch(/energy 0\.999/);
    expect(a.seed).toBe(c.seed);
    expect(a.verify?.minCosine).toBe(0.99);
    expect(a.verify?.minCosine).toBe(c.verify?.minCosine);
    expect(a.verify?.runs).toBe(c.verify?.runs);
    expect(a.inputs).toBe(c.inputs);
    // Whether each layer was kept depends on timings; which layers were considered does not.
    expect(a.layers.map((l) => l.name)).toEqual(c.layers.map((l) => l.name));
  });

  it('takes a model as a path or as bytes, with the same result', async () => {
    const bytes = new Uint8Array(fs.readFileSync(CLS));
    const opts = { shapes: { x: [1, 3, 48, 192] }, rankRatio: 0.5, save: 'params' as const, latency: false };
    const [fromPath, fromBytes] = [await optimize(CLS, opts), await optimize(bytes, opts)];
    expect(fromPath.report.layers.filter((l) => !l.skipped).length).toBeGreaterThan(0);
    expect(fromBytes.model).toBeInstanceOf(Uint8Array);
    expect(Buffer.from(fromBytes.model!).equals(Buffer.from(fromPath.model!))).toBe(true);
    expect(fromBytes.report.input.file).toBe(`<${bytes.length} bytes>`);
    expect(fromPath.report.input.file).toBe(CLS);
    expect(stable(fromBytes.report)).toEqual(stable(fromPath.report));

    const [i1, i2] = [await inspect(CLS, { profile: false }), await inspect(bytes, { profile: false })];
    expect({ ...i2, file: CLS }).toEqual(i1);
    expect(i1.layers.length).toBe(54);

    const p = await plan(bytes, { rankRatio: 0.5, save: 'params', shapes: { x: [1, 3, 48, 192] } });
    expect(p.layers.filter((l) => !l.skipped).map((l) => l.name)).toEqual(fromPath.report.layers.filter((l) => !l.skipped).map((l) => l.name));

    const m = await loadModel(bytes);
    try {
      expect(m.path).toBeUndefined();
      const again = await saveModel(m);
      expect((await inspect(again, { profile: false })).params).toBe(i1.params);
    } finally {
      m.close();
    }
  });

  it('verify compares models given as paths (a deep verifyModels call with paths threw a TypeError) or bytes', async () => {
    const out = await optimize(CLS, { shapes: { x: [1, 3, 48, 192] }, maxError: 'cosine:0.995', save: 'params', latency: false });
    expect(out.pass).toBe(true);
    const dir = tmpDir();
    const file = path.join(dir, 'opt.onnx');
    fs.writeFileSync(file, out.model!);
    const byPath = await verify(CLS, file, { shapes: { x: [1, 3, 48, 192] } });
    const byBytes = await verify(new Uint8Array(fs.readFileSync(CLS)), out.model!, { shapes: { x: [1, 3, 48, 192] } });
    expect(byPath.outputs.length).toBe(1);
    expect(byBytes).toEqual(byPath);
    // The verdict optimize gave on the same seeded inputs, judged the same way (by the
    // cosine, not by float tolerances a lossy rewrite never meets), at the default 0.99.
    expect(byPath.outputs[0]!.cosine).toBe(out.report.verify!.outputs[0]!.cosine);
    expect(byPath.outputs[0]!.cosine).toBeLessThan(0.99999);
    expect(byPath.pass, byPath.reasons.join('; ')).toBe(true);
    const strict = await verify(CLS, file, { shapes: { x: [1, 3, 48, 192] }, minCosine: 0.99999 });
    expect(strict.pass).toBe(false);
  });

  it('a missing file is an LrError with code io naming the file, from every call', async () => {
    const missing = path.join(tmpDir(), 'missing.onnx');
    for (const call of [optimize(missing), inspect(missing), plan(missing), loadModel(missing), verify(missing, CLS)]) {
      const e = await rejection(call);
      expect(e.code).toBe('io');
      expect(e.message).toContain(missing);
    }
  });

  it('bad options and bad inputs are LrErrors with code usage, named as the command line names them', async () => {
    expect((await rejection(optimize(CLS, { energy: 2 }))).message).toBe('--energy expects a number in [0, 1], got "2"');
    expect((await rejection(optimize(CLS, { energy: 0.9, rank: 3 }))).message).toBe('choose one of --energy, --rank-ratio, --vbmf, --rank (got --energy, --rank)');
    expect((await rejection(optimize(CLS, { maxError: 'cosine:2' }))).code).toBe('usage');
    expect((await rejection(optimize(42 as unknown as string))).message).toMatch(/^model: expected a file path or the model's bytes/);
    const bad = await rejection(inspect(new Uint8Array([1, 2, 3])));
    expect(bad.code).toBe('parse');
    expect(bad.message).toMatch(/^<3 bytes>: /); // named as given, not by a temp file
  });
});
