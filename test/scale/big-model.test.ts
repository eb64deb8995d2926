/**
 * Scale: a synthetic MLP over 2 GiB with external data (tools/make-big-model.ts, 14 MatMul
 * weights of 4096×11008 fp32 = 2.52 GB) through inspect, convert and optimize --rank 64.
 * Slow (building alone takes minutes, optimize much longer): opt in with LR_BIG_TESTS=1.
 *   LR_BIG_DIR=DIR     build (or reuse) the model there and keep it
 *   LR_BIG_LAYERS=N    number of weights (default 14; 12 is the smallest count over 2 GiB)
 *   LR_BIG_VERIFY=0    optimize with --no-verify
 * Peak memory per command: npm run bench:memory.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import type { InspectResult } from '../../src/cli/inspect.js';
import { loadModel } from '../../src/onnx/file.js';
import type { Report } from '../../src/report/report.js';
import { bigModelFiles, makeBigModel } from '../../tools/make-big-model.js';
import { nonProgress } from '../helpers/cli.js';

const HOUR = 3_600_000;

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string; seconds: number }> {
  let out = '';
  let err = '';
  const t0 = performance.now();
  const code = await main(argv, { out: (s) => { out += `${s}\n`; }, err: (s) => { err += `${s}\n`; } });
  return { code, out, err, seconds: (performance.now() - t0) / 1000 };
}

function sha256(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(64 << 20);
  try {
    for (let pos = 0; ;) {
      const n = fs.readSync(fd, buf, 0, buf.length, pos);
      if (n <= 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

describe.skipIf(!process.env.LR_BIG_TESTS)('a model over 2 GiB with external data', () => {
  const layers = Number(process.env.LR_BIG_LAYERS ?? 14);
  const dir = process.env.LR_BIG_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-big-'));
  const model = path.join(dir, 'big.onnx');
  // Named by a hash of its content (see src/onnx/file.ts): known once the model is there.
  let data = '';
  const outDir = path.join(dir, 'out');
  let dataHash = '';

  beforeAll(() => {
    fs.mkdirSync(outDir, { recursive: true });
    if (!bigModelFiles(dir)) makeBigModel(dir, { layers });
    data = bigModelFiles(dir)!.data;
    dataHash = sha256(data);
  }, HOUR);

  afterAll(() => {
    if (!process.env.LR_BIG_DIR) fs.rmSync(dir, { recursive: true, force: true });
    else fs.rmSync(outDir, { recursive: true, force: true });
  });

  it('is over 2 GiB, in a small protobuf and a data file', () => {
    const size = fs.statSync(model).size + fs.statSync(data).size;
    if (layers >= 12) expect(size).toBeGreaterThan(2 ** 31);
    expect(fs.statSync(model).size).toBeLessThan(64 * 1024);
  });

  it('inspect lists every layer with MACs from an ORT run', async () => {
    const r = await run('inspect', model, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as InspectResult;
    expect(j.layers).toHaveLength(layers);
    expect(j.layers.every((l) => l.macs === 4096 * 11008)).toBe(true);
    // Shapes come from ORT reading the weights from their file (no inlining past 2 GiB).
    expect(j.shapeSource).toBe('ort-run');
    console.log(`inspect: ${r.seconds.toFixed(1)} s`);
  }, HOUR);

  it('convert streams it to OUT + OUT.data (external data chosen automatically), byte-identical data, ORT loads it', async () => {
    const out = path.join(outDir, 'conv.onnx');
    const r = await run('convert', model, out);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const outData = fs.readdirSync(outDir).filter((n) => /^conv\.onnx\.[0-9a-f]{12}\.data$/.test(n)).map((n) => path.join(outDir, n));
    expect(outData).toHaveLength(1);
    expect(sha256(outData[0])).toBe(dataHash);
    const back = loadModel(out);
    expect(back.model.graph!.initializer).toHaveLength(layers);
    back.external.close();
    const s = await ort.InferenceSession.create(out, { logSeverityLevel: 4 });
    await s.release();
    fs.rmSync(outData[0]);
    console.log(`convert: ${r.seconds.toFixed(1)} s`);
  }, HOUR);

  async function optimizeAll(extra: string[]): Promise<void> {
    const out = path.join(outDir, 'opt.onnx');
    const verify = process.env.LR_BIG_VERIFY === '0' ? ['--no-verify'] : ['--no-latency'];
    const r = await run('optimize', model, out, ...extra, ...verify, '--json');
    // Nothing but progress: a run this long logs a line every 10 s.
    expect(nonProgress(r.err)).toEqual([]);
    const rep = JSON.parse(r.out) as Report;
    console.log(`optimize: ${r.seconds.toFixed(1)} s; per layer ms: ${rep.layers.map((l) => l.ms).join(', ')}`);
    expect(rep.layers.filter((l) => !l.skipped)).toHaveLength(layers);
    expect(rep.layers.every((l) => l.ranks?.[0] === 64)).toBe(true);
    if (process.env.LR_BIG_VERIFY !== '0') {
      expect(r.code).toBe(0);
      expect(rep.verify!.pass).toBe(true);
    }
    expect(sha256(data)).toBe(dataHash); // IN untouched
  }

  it('optimize --plan (rank 64 for every layer) rewrites every 4096x11008 layer and the result verifies in ORT', async () => {
    const plan = path.join(outDir, 'plan.json');
    fs.writeFileSync(plan, JSON.stringify({
      version: 1, model, policy: 'plan', layers: Array.from({ length: layers }, (_, i) => ({ name: `mm${i}`, pass: 'matmul-svd', ranks: [64] })),
    }));
    await optimizeAll(['--plan', plan]);
  }, 6 * HOUR);

  // The rank search asks src/rewrite/svd-pair.ts for every singular value up to break-even
  // (2985 of them for 4096x11008), an exact JS SVD that takes tens of minutes per layer:
  // opt in separately with LR_BIG_RANK=1 until that is fixed.
  it.skipIf(!process.env.LR_BIG_RANK)('optimize --rank 64 rewrites every 4096x11008 layer and the result verifies in ORT', async () => {
    await optimizeAll(['--rank', '64']);
  }, 24 * HOUR);
});
