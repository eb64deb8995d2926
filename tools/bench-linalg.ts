/**
 * Benchmark of the numerical core against numpy (same algorithm, same sizes, same
 * inputs, measured in the same run). Not a test: run with `npm run bench:linalg`
 * (`-- --json` for one JSON object per line, `-- --only=svd` to filter cases).
 *
 * numpy runs via /usr/bin/python3 if it exists and imports numpy; otherwise ref_s is
 * null. Inputs are generated here (seeded) and handed to numpy as raw files, so both
 * sides see identical matrices. Times are medians over repeats; rel_err is the
 * relative Frobenius reconstruction error of each side's own result, computed after
 * the clock stops for the SVD cases (Tucker-2 and CP-ALS report it as part of their
 * output, on both sides). The load average is printed with the table: the machine is
 * shared, and only ratios measured in one quiet run mean much.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpAls, khatriRao } from '../src/linalg/cp-als.js';
import { runAsync, type GemmEngine } from '../src/linalg/engine.js';
import { gemm } from '../src/linalg/gemm.js';
import { randomNormal, scaleCols, type Matrix } from '../src/linalg/matrix.js';
import * as ort from 'onnxruntime-node';
import { encodeGemmModel, ONNX_FLOAT } from '../src/linalg/gemm-model.js';
import { createOrtGemmEngine } from '../src/linalg/ort-gemm.js';
import { randomizedSvd } from '../src/linalg/rsvd.js';
import { svd, svdAsync } from '../src/linalg/svd.js';
import { reconstructTucker2, tucker2 } from '../src/linalg/tucker2.js';
import { createRng, type Rng } from '../src/util/rng.js';

const PEAK_GFLOPS = 227; // this machine's fp32 peak (2 cores, AVX2 FMA)
const args = process.argv.slice(2);
const json = args.includes('--json');
const only = args.find((a) => a.startsWith('--only='))?.slice(7);

interface Row {
  case: string;
  ours_s: number;
  ref_s: number | null;
  ratio: number | null;
  rel_err: number | null;
  ref_rel_err: number | null;
  gflops?: number;
  peak_share?: number;
  note?: string;
}

interface Case {
  name: string;
  repeats: number;
  /** Writes inputs for numpy; returns the python snippet's case spec. */
  setup(dir: string): Promise<PyCase>;
  /**
   * One timed run. Returns how to get its rel_err, evaluated after the clock stops:
   * checking a result (e.g. reconstructing a 4096² matrix) is not part of its cost.
   */
  run(): Promise<() => Promise<number> | number>;
  note?(seconds: number): string;
  /** Products only: 2mnk flops per run. */
  flops?: number;
}

interface PyCase {
  name: string;
  kind: string;
  repeats: number;
  params: Record<string, number | string>;
}

async function median(fn: () => Promise<() => Promise<number> | number>, repeats: number): Promise<{ s: number; err: number }> {
  const times: number[] = [];
  let check: () => Promise<number> | number = () => NaN;
  for (let i = 0; i < repeats; i++) {
    const t = performance.now();
    check = await fn();
    times.push((performance.now() - t) / 1000);
  }
  times.sort((a, b) => a - b);
  return { s: times[Math.floor(times.length / 2)]!, err: await check() };
}

function writeRaw(dir: string, name: string, data: Float32Array | Float64Array): string {
  const p = join(dir, name);
  writeFileSync(p, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  return p;
}

function relErr(approx: ArrayLike<number>, exact: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < exact.length; i++) {
    d += (approx[i]! - exact[i]!) ** 2;
    n += exact[i]! ** 2;
  }
  return Math.sqrt(d / n);
}

/** m×n matrix X·diag(d)·Y + noise with a slowly decaying spectrum (products on the engine). */
async function decayingMatrix(m: number, n: number, k: number, rng: Rng, engine: GemmEngine, f32: boolean): Promise<Matrix> {
  const d = Array.from({ length: k }, (_, i) => 1 / Math.pow(1 + i, 0.7));
  const x = scaleCols(randomNormal(m, k, rng.normal), d);
  const y = randomNormal(k, n, rng.normal);
  const a = await engine.matmul(x, y);
  const out = f32 ? new Float32Array(m * n) : new Float64Array(m * n);
  for (let i = 0; i < out.length; i++) out[i] = a.data[i]! + 0.05 * rng.normal();
  return { rows: m, cols: n, data: out };
}

/** Sync `svd` (all JS), or `svdAsync` with its products on the engine (ORT). */
function svdCase(n: number, engine: GemmEngine, onEngine: boolean): Case {
  let a: Matrix;
  return {
    name: `full SVD ${n}x${n} fp64${onEngine ? ' (ORT products)' : ' (JS)'}`,
    repeats: n >= 1024 ? 3 : 5,
    async setup(dir) {
      a = randomNormal(n, n, createRng(n).normal);
      return { name: this.name, kind: 'svd', repeats: this.repeats, params: { path: writeRaw(dir, `svd${n}.bin`, a.data), n } };
    },
    async run() {
      const r = onEngine ? await svdAsync(a, engine) : svd(a);
      return async () => relErr((await engine.matmul(scaleCols(r.u, r.s), r.vt)).data, a.data);
    },
  };
}

function rsvdCase(n: number, rank: number, engine: GemmEngine): Case {
  let a: Matrix;
  return {
    name: `rSVD rank ${rank} ${n}x${n} fp32`,
    repeats: 3,
    async setup(dir) {
      a = await decayingMatrix(n, n, 512, createRng(7 + n), engine, true);
      return { name: this.name, kind: 'rsvd', repeats: this.repeats, params: { path: writeRaw(dir, `rsvd${n}.bin`, a.data), n, rank, p: 10, q: 2 } };
    },
    async run() {
      const r = await randomizedSvd(a, rank, { engine, seed: 1, oversample: 10, powerIters: 2 });
      return async () => {
        const us = scaleCols(r.u, r.s);
        const rec = await engine.matmul({ rows: n, cols: rank, data: Float32Array.from(us.data) }, { rows: rank, cols: n, data: Float32Array.from(r.vt.data) });
        return relErr(rec.data, a.data);
      };
    },
  };
}

/**
 * `label` names who runs the product: the default engine lets its thread pools sleep
 * between runs (right for algorithms that alternate sessions); a spinning engine is
 * what a caller running one product back to back would configure; "raw ORT" is a
 * bare InferenceSession on the same Gemm model, so the engine's own overhead shows as
 * the gap between rows measured in the same run.
 */
function gemmCase(label: string, product: (a: Matrix, b: Matrix) => Promise<number>): Case {
  const n = 1024;
  let a: Matrix, b: Matrix;
  return {
    name: `GEMM 1024^3 fp32 (${label})`,
    repeats: 41, // 20 ms each: more repeats make the median robust to other processes
    flops: 2 * n ** 3,
    async setup(dir) {
      const rng = createRng(3);
      a = randomNormal(n, n, rng.normal, true);
      b = randomNormal(n, n, rng.normal, true);
      await product(a, b); // session creation is not part of the product's cost
      return { name: this.name, kind: 'gemm', repeats: this.repeats, params: { a: writeRaw(dir, 'ga.bin', a.data), b: writeRaw(dir, 'gb.bin', b.data), n, dtype: 'float32' } };
    },
    async run() {
      const rows = await product(a, b);
      return () => (rows === n * n ? 0 : NaN);
    },
    note: (s) => `${(2 * n ** 3 / s / 1e9).toFixed(1)} GFLOP/s = ${((2 * n ** 3 / s / 1e9 / PEAK_GFLOPS) * 100).toFixed(0)}% of peak ${PEAK_GFLOPS}`,
  };
}

const engineProduct = (e: GemmEngine) => async (a: Matrix, b: Matrix) => (await e.matmul(a, b)).data.length;

function rawOrtProduct(sessions: ort.InferenceSession[]): (a: Matrix, b: Matrix) => Promise<number> {
  return async (a, b) => {
    if (!sessions[0]) {
      const bytes = encodeGemmModel({ elemType: ONNX_FLOAT, transA: false, transB: false });
      sessions.push(await ort.InferenceSession.create(bytes, { intraOpNumThreads: 2, interOpNumThreads: 1 }));
    }
    const out = await sessions[0]!.run({ A: new ort.Tensor('float32', a.data as Float32Array, [a.rows, a.cols]), B: new ort.Tensor('float32', b.data as Float32Array, [b.rows, b.cols]) });
    return out['Y']!.data.length;
  };
}

function jsGemmCase(): Case {
  const n = 1024;
  let a: Matrix, b: Matrix;
  return {
    name: 'GEMM 1024^3 fp64 (pure JS)',
    repeats: 3,
    flops: 2 * n ** 3,
    async setup(dir) {
      const rng = createRng(4);
      a = randomNormal(n, n, rng.normal);
      b = randomNormal(n, n, rng.normal);
      return { name: this.name, kind: 'gemm', repeats: this.repeats, params: { a: writeRaw(dir, 'ja.bin', a.data), b: writeRaw(dir, 'jb.bin', b.data), n, dtype: 'float64' } };
    },
    async run() {
      gemm(a, b);
      return () => 0;
    },
    note: (s) => `${(2 * n ** 3 / s / 1e9).toFixed(2)} GFLOP/s`,
  };
}

function tuckerCase(engine: GemmEngine): Case {
  const [T, S, k, r] = [512, 512, 9, 128];
  let w: Float64Array;
  const iters = 5;
  return {
    name: `Tucker-2 512x512x3x3 (128,128), ${iters} HOOI`,
    repeats: 3,
    async setup(dir) {
      // Kernel with decaying spectra on both channel modes: G ×₁ A ×₂ B, A and B column-scaled Gaussians.
      const rng = createRng(11);
      const d = Array.from({ length: T }, (_, i) => 1 / Math.pow(1 + i, 0.6));
      const a = scaleCols(randomNormal(T, T, rng.normal), d);
      const b = scaleCols(randomNormal(S, S, rng.normal), d.slice(0, S));
      const g = randomNormal(T, S * k, rng.normal).data as Float64Array;
      w = await runAsync(reconstructTucker2(g, a, b), engine);
      return { name: this.name, kind: 'tucker', repeats: this.repeats, params: { path: writeRaw(dir, 'tucker.bin', w), T, S, k, r1: r, r2: r, iters } };
    },
    async run() {
      // The relative error is part of the algorithm's own output here (and of numpy's run).
      const res = await tucker2({ data: w, shape: [T, S, 3, 3] }, [r, r], { engine, maxIter: iters, tol: -1, svd: { seed: 1 } });
      return () => res.relError;
    },
  };
}

function cpCase(engine: GemmEngine): Case {
  const [T, S, k, R, iters] = [256, 256, 9, 64, 25];
  let x: Float64Array;
  return {
    name: `CP-ALS rank ${R} 256x256x3x3, ${iters} iters`,
    repeats: 3,
    async setup(dir) {
      // Rank-96 CP tensor plus noise: a rank-64 fit cannot be exact, as with real kernels.
      const rng = createRng(12);
      const fs = [randomNormal(T, 96, rng.normal), randomNormal(S, 96, rng.normal), randomNormal(k, 96, rng.normal)];
      const dense = gemm(fs[0]!, khatriRao(fs.slice(1)), { transB: true }).data;
      x = dense.map((v) => v + 0.5 * rng.normal()) as Float64Array;
      return { name: this.name, kind: 'cp', repeats: this.repeats, params: { path: writeRaw(dir, 'cp.bin', x), T, S, k, R, iters } };
    },
    async run() {
      const res = await cpAls({ data: x, shape: [T, S, k] }, R, { engine, maxIter: iters, tol: -1, seed: 1 });
      return () => res.relError;
    },
  };
}

const PY = String.raw`
import json, sys, time
import numpy as np
cases = json.loads(sys.stdin.read())
def med(fn, reps):
    # fn() is the timed run; it returns a function that checks the result untimed.
    ts = []; check = None
    for _ in range(reps):
        t = time.perf_counter(); check = fn(); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts)//2], check()
def rel(a, b): return float(np.linalg.norm(a - b) / np.linalg.norm(b))
def leading(x, r):
    u, s, vt = np.linalg.svd(x, full_matrices=False); return u[:, :r]
def run(c):
    p = c['params']; kind = c['kind']
    if kind == 'gemm':
        n = p['n']; dt = np.dtype(p['dtype'])
        a = np.fromfile(p['a'], dtype=dt).reshape(n, n); b = np.fromfile(p['b'], dtype=dt).reshape(n, n)
        return med(lambda: (a @ b, lambda: 0.0)[1], c['repeats'])
    if kind == 'svd':
        n = p['n']; a = np.fromfile(p['path'], dtype=np.float64).reshape(n, n)
        def f():
            u, s, vt = np.linalg.svd(a, full_matrices=False); return lambda: rel((u * s) @ vt, a)
        return med(f, c['repeats'])
    if kind == 'rsvd':
        n, k, l, q = p['n'], p['rank'], p['rank'] + p['p'], p['q']
        a = np.fromfile(p['path'], dtype=np.float32).reshape(n, n)
        rng = np.random.default_rng(1)
        def f():
            om = rng.standard_normal((n, l), dtype=np.float32)
            Q, _ = np.linalg.qr(a @ om)
            for _ in range(q):
                Z, _ = np.linalg.qr(a.T @ Q); Q, _ = np.linalg.qr(a @ Z)
            ub, s, vt = np.linalg.svd(Q.T @ a, full_matrices=False)
            u = Q @ ub[:, :k]
            return lambda: rel((u * s[:k]) @ vt[:k], a)
        return med(f, c['repeats'])
    if kind == 'tucker':
        T, S, k, r1, r2, iters = p['T'], p['S'], p['k'], p['r1'], p['r2'], p['iters']
        w = np.fromfile(p['path'], dtype=np.float64).reshape(T, S, k)
        xT = w.reshape(T, S * k); xS = w.transpose(1, 0, 2).reshape(S, T * k)
        def swap(y, a, b): return y.reshape(a, b, k).transpose(1, 0, 2).reshape(b, a * k)
        def f():
            uS = leading(xS, r1)
            for _ in range(iters):
                uT = leading(swap(uS.T @ xS, r1, T), r2)
                uS = leading(swap(uT.T @ xT, r2, S), r1)
            g = swap(uS.T @ swap(uT.T @ xT, r2, S), r1, r2)      # [r2, r1*k]
            rec = swap(uS @ swap(uT @ g, T, r1), S, T)           # [T, S*k]
            e = rel(rec, xT); return lambda: e
        return med(f, c['repeats'])
    if kind == 'cp':
        T, S, k, R, iters = p['T'], p['S'], p['k'], p['R'], p['iters']
        x = np.fromfile(p['path'], dtype=np.float64).reshape(T, S, k)
        unf = [x.reshape(T, -1), x.transpose(1, 0, 2).reshape(S, -1), x.transpose(2, 0, 1).reshape(k, -1)]
        def kr(a, b): return (a[:, None, :] * b[None, :, :]).reshape(-1, a.shape[1])
        rng = np.random.default_rng(1)
        def f():
            fs = []
            for n, d in enumerate((T, S, k)):
                u = leading(unf[n], min(R, d))
                if u.shape[1] < R:
                    extra = rng.standard_normal((d, R - u.shape[1])); extra /= np.linalg.norm(extra, axis=0)
                    u = np.hstack([u, extra])
                fs.append(u)
            for _ in range(iters):
                for n in range(3):
                    o = [fs[m] for m in range(3) if m != n]
                    h = (o[0].T @ o[0]) * (o[1].T @ o[1])
                    m = unf[n] @ kr(o[0], o[1])
                    f_ = np.linalg.solve(h + 1e-9 * np.eye(R), m.T).T
                    w = np.linalg.norm(f_, axis=0); w[w == 0] = 1
                    fs[n] = f_ / w
            xh = (fs[0] * w) @ kr(fs[1], fs[2]).T
            e = rel(xh.reshape(T, S, k), x); return lambda: e
        return med(f, c['repeats'])
    raise ValueError(kind)
out = {}
for c in cases:
    s, e = run(c); out[c['name']] = {'s': s, 'err': e}
print(json.dumps(out))
`;

function numpyAvailable(): boolean {
  if (!existsSync('/usr/bin/python3')) return false;
  return spawnSync('/usr/bin/python3', ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;
}

async function main(): Promise<void> {
  const load0 = loadavg().map((x) => x.toFixed(2)).join(' ');
  const engine = createOrtGemmEngine({ threads: 2 });
  const spinning = createOrtGemmEngine({ threads: 2, spinning: true });
  const raw: ort.InferenceSession[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'bench-linalg-'));
  try {
    const cases = [
      gemmCase('ORT engine', engineProduct(engine)), gemmCase('ORT engine, spinning', engineProduct(spinning)), gemmCase('raw ORT session', rawOrtProduct(raw)),
      jsGemmCase(), svdCase(512, engine, false), svdCase(512, engine, true), svdCase(1024, engine, false), svdCase(1024, engine, true),
      rsvdCase(2048, 128, engine), rsvdCase(4096, 128, engine), tuckerCase(engine), cpCase(engine),
    ].filter((c) => !only || c.name.toLowerCase().includes(only.toLowerCase()));
    // Ours and numpy alternate case by case, so both sides of a ratio see the same
    // machine load (other processes may come and go during a long run).
    const hasNumpy = numpyAvailable();
    const ours = new Map<string, { s: number; err: number }>();
    const ref: Record<string, { s: number; err: number }> = {};
    for (const c of cases) {
      const spec = await c.setup(dir);
      // Warm-up (JIT, ORT sessions, thread pools): a few runs for the short GEMM case.
      for (let w = 0; w < (c.flops ? 5 : 1); w++) await c.run();
      ours.set(c.name, await median(() => c.run(), c.repeats));
      if (hasNumpy) {
        const py = spawnSync('/usr/bin/python3', ['-c', PY], { input: JSON.stringify([spec]), encoding: 'utf8', maxBuffer: 1 << 24 });
        if (py.status === 0) Object.assign(ref, JSON.parse(py.stdout.trim().split('\n').pop()!));
        else process.stderr.write(`numpy reference failed for ${c.name}:\n${py.stderr}\n`);
      }
      if (!json) process.stderr.write(`  measured ${c.name}\n`);
    }
    const rows: Row[] = cases.map((c) => {
      const o = ours.get(c.name)!;
      const r = ref[c.name];
      return {
        case: c.name,
        ours_s: round(o.s),
        ref_s: r ? round(r.s) : null,
        ratio: r ? round(o.s / r.s) : null,
        rel_err: c.name.startsWith('GEMM') ? null : o.err,
        ref_rel_err: r && !c.name.startsWith('GEMM') ? r.err : null,
        ...(c.flops ? { gflops: round(c.flops / o.s / 1e9), peak_share: round(c.flops / o.s / 1e9 / PEAK_GFLOPS) } : {}),
        ...(c.note ? { note: c.note(o.s) } : {}),
      };
    });
    const load = loadavg().map((x) => x.toFixed(2)).join(' ');
    if (json) {
      for (const r of rows) console.log(JSON.stringify(r));
    } else {
      printTable(rows);
      console.log(`load average at start: ${load0}, at end: ${load}`);
    }
  } finally {
    await engine.dispose();
    await spinning.dispose();
    for (const r of raw) await r.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

function round(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

function printTable(rows: Row[]): void {
  const fmt = (v: number | null | undefined, exp = false) => (v === null || v === undefined ? '-' : exp ? v.toExponential(2) : String(v));
  const table = rows.map((r) => [r.case, fmt(r.ours_s), fmt(r.ref_s), fmt(r.ratio), fmt(r.rel_err, true), fmt(r.ref_rel_err, true), r.note ?? '']);
  const head = ['case', 'ours_s', 'numpy_s', 'ratio', 'rel_err', 'numpy_rel_err', 'note'];
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of table) console.log(line(row));
}

await main();
