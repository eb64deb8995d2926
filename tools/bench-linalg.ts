/**
 * Benchmark of the numerical core against numpy, on the same inputs, measured in the same
 * run. Not a test: `npm run bench:linalg` (`-- --json` for one JSON object per line,
 * `-- --only=svd` to filter cases, `-- --quick` for small sizes as a check that the
 * tool works, `-- --threads=N` for the thread count of both sides, default 2,
 * `-- --python=PATH` for the reference's interpreter, default `python3` on PATH).
 *
 * What is compared:
 * - GEMM: the same product (ORT/MLAS, or the pure-JS kernel, against numpy's BLAS).
 * - full SVD: the same result by different algorithms (ours against LAPACK's gesdd).
 * - rSVD, Tucker-2, CP-ALS: the same algorithm on both sides; tools/bench-linalg-ref.py
 *   follows src/linalg/ step by step (Gram/exact/randomized choice, warm-started sketches
 *   in HOOI, oversampling, power iterations, per-sweep errors). Orthonormal bases are
 *   CholeskyQR here and Householder QR in numpy, and the random test matrices differ.
 *
 * How: the numpy side is one long-lived python process (tools/bench-linalg-ref.py) that
 * times its own runs. Each case gets the same number of warm-up runs on both sides, then
 * the sides alternate run by run (ours, numpy, numpy, ours, …) with a short pause before
 * each run so that neither side's spinning thread pool overlaps the other's run; each
 * side's figure is the median of its runs, with the spread (min–max) in --json.
 * Threads are pinned on both sides: ORT sessions get `--threads`, numpy gets
 * OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS / BLIS_NUM_THREADS; OPENBLAS_CORETYPE and
 * OPENBLAS_L2_SIZE (set on some machines for old OpenBLAS builds, they slow a current
 * one) are unset for the reference process only, and the kernel it then runs is printed.
 *
 * The reference must be an optimized BLAS: the header prints the numpy version, the
 * BLAS library it loaded (with its kernel and threads when it is OpenBLAS) and its fp32
 * 1024³ matmul rate. A reference BLAS (e.g. Debian's libblas3), or a rate under
 * 20 GFLOP/s, is refused: its rows show our side only, and the tool exits 1 when no row
 * could be compared. "peak" is not a datasheet figure: it is the best fp32 GEMM rate
 * measured on this machine in this run (2048³, or 1024³ with --quick, ORT or numpy, and
 * the best run of each GEMM case). `--min-ref-gflops=N` changes the 20 GFLOP/s bar.
 *
 * rel_err is the relative Frobenius reconstruction error of each side's own result,
 * computed after the clock stops for the SVD cases (Tucker-2 and CP-ALS report it as part
 * of their output, on both sides). The machine is shared: the load average is printed,
 * and only ratios measured in one quiet run mean much.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { cpAls } from '../src/linalg/cp-als.js';
import { khatriRao } from '../src/linalg/tensor.js';
import { runAsync, type GemmEngine } from '../src/linalg/engine.js';
import { encodeGemmModel, ONNX_FLOAT } from '../src/linalg/gemm-model.js';
import { gemm } from '../src/linalg/gemm.js';
import { randomNormal, scaleCols, type Matrix } from '../src/linalg/matrix.js';
import { createOrtGemmEngine } from '../src/linalg/ort-gemm.js';
import { randomizedSvd } from '../src/linalg/rsvd.js';
import { svd, svdAsync } from '../src/linalg/svd.js';
import { reconstructTucker2, tucker2 } from '../src/linalg/tucker2.js';
import { createRng, type Rng } from '../src/util/rng.js';
import { alternate, flag, intOption, loadLine, type Timing } from './bench-util.js';

const args = process.argv.slice(2);
const json = flag(args, 'json');
const quick = flag(args, 'quick');
const only = args.find((a) => a.startsWith('--only='))?.slice(7);
const THREADS = intOption(args, 'threads', 2, 'bench-linalg');
const PYTHON = args.find((a) => a.startsWith('--python='))?.slice(9) || 'python3';
const REF_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'bench-linalg-ref.py');
/** Below this fp32 1024³ matmul rate (best of 11) a BLAS is not optimized (OpenBLAS on 2 cores: ~190). */
const MIN_REF_GFLOPS = intOption(args, 'min-ref-gflops', 20, 'bench-linalg');
/** Pause before each timed run, so the other side's spinning threads have gone idle. */
const PAUSE_MS = 100;
const PEAK_N = quick ? 1024 : 2048;

interface Row {
  case: string;
  ours_s: number;
  ref_s: number | null;
  ratio: number | null;
  ours_spread: [number, number];
  ref_spread: [number, number] | null;
  runs: number;
  rel_err: number | null;
  ref_rel_err: number | null;
  gflops?: number;
  peak_share?: number;
  note?: string;
}

type Check = () => Promise<number> | number;

interface Case {
  name: string;
  repeats: number;
  /** Untimed runs of each side before the timed ones (JIT, sessions, thread pools, caches). */
  warmup: number;
  /** Writes inputs for numpy; returns the case spec for bench-linalg-ref.py. */
  setup(dir: string): Promise<PyCase>;
  /**
   * One timed run. Returns how to get its rel_err, evaluated after the clock stops:
   * checking a result (e.g. reconstructing a 4096² matrix) is not part of its cost.
   */
  run(): Promise<Check>;
  /** Products only: 2mnk flops per run. */
  flops?: number;
  /** What differs between the two sides, when it is not the same algorithm. */
  differs?: string;
}

interface PyCase { name: string; kind: string; params: Record<string, number | string> }

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

// ---- the numpy side ------------------------------------------------------------------------

interface Probe {
  python: string; python_version: string; numpy: string;
  build: { name: string | null; version: string | null; config: string | null };
  libraries: string[];
  runtime: { library: string; config: string; kernel: string; threads: number } | null;
  reference_blas: boolean;
  gemm1024: { median_gflops: number; best_gflops: number };
  peak: { n: number; best_gflops: number };
  env: Record<string, string | null>;
}

/** A failure of the numpy side (its case is then measured on our side alone). */
class RefError extends Error {}

/** The long-lived numpy process: one JSON request per line, one answer per line. */
class NumpyRef {
  private constructor(private readonly proc: ReturnType<typeof spawn>, private readonly lines: AsyncIterator<string>, readonly probe: Probe, readonly stderr: () => string) {}

  static async start(threads: number): Promise<NumpyRef | string> {
    const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads), BLIS_NUM_THREADS: String(threads) };
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    const proc = spawn(PYTHON, [REF_SCRIPT, String(PEAK_N)], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    // A reference that exited makes writes fail with EPIPE: the next read reports it.
    proc.stdin!.on('error', () => {});
    const spawned = await new Promise<string | null>((resolve) => {
      proc.once('spawn', () => resolve(null));
      proc.once('error', (e) => resolve(`cannot run ${PYTHON}: ${e.message}`));
    });
    if (spawned) return spawned;
    const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done) {
      await new Promise((r) => proc.once('close', r));
      return `${PYTHON} ${REF_SCRIPT} failed: ${err.trim().split('\n').pop() ?? 'no output'}`;
    }
    return new NumpyRef(proc, lines, JSON.parse(first.value) as Probe, () => err);
  }

  async request(req: object): Promise<Record<string, unknown>> {
    this.proc.stdin!.write(`${JSON.stringify(req)}\n`);
    const r = await this.lines.next();
    if (r.done) throw new RefError(`numpy reference exited: ${this.stderr().trim().split('\n').pop() ?? ''}`);
    const out = JSON.parse(r.value) as Record<string, unknown>;
    if (typeof out.error === 'string') throw new RefError(out.error);
    return out;
  }

  async close(): Promise<void> {
    this.proc.stdin!.end();
    if (this.proc.exitCode === null) await new Promise((r) => this.proc.once('close', r));
  }
}

/** Why the reference cannot be compared with, or null when it can. */
function refusal(p: Probe, threads: number): string | null {
  if (p.reference_blas) return `numpy ${p.numpy} runs on a reference BLAS (${p.libraries.join(', ')}), not an optimized one`;
  if (p.gemm1024.best_gflops < MIN_REF_GFLOPS) {
    return `numpy's fp32 1024³ matmul runs at ${p.gemm1024.best_gflops.toFixed(1)} GFLOP/s at best, under the ${MIN_REF_GFLOPS} GFLOP/s of an optimized BLAS`;
  }
  if (p.runtime && p.runtime.threads !== threads) return `numpy's OpenBLAS runs ${p.runtime.threads} threads, not the ${threads} asked for`;
  return null;
}

function describeRef(p: Probe): string[] {
  const b = p.build;
  const rt = p.runtime;
  const env = Object.entries(p.env).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(' ');
  return [
    `reference: numpy ${p.numpy} (python ${p.python_version}, ${p.python})`,
    `  BLAS built against: ${b.name ?? '?'} ${b.version ?? ''}${b.config ? ` [${b.config}]` : ''}`,
    `  BLAS loaded: ${p.libraries.length ? p.libraries.join(', ') : 'none found in /proc/self/maps'}`,
    `  at run time: ${rt ? `kernel ${rt.kernel}, ${rt.threads} thread(s) [${rt.config}]` : 'not OpenBLAS, or it does not say (threads pinned by the environment)'}`,
    `  environment of the reference: ${env}${process.env.OPENBLAS_CORETYPE || process.env.OPENBLAS_L2_SIZE ? ` (OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE ?? ''} OPENBLAS_L2_SIZE=${process.env.OPENBLAS_L2_SIZE ?? ''} unset for it)` : ''}`,
    `  fp32 1024³ matmul: ${p.gemm1024.median_gflops.toFixed(1)} GFLOP/s median, ${p.gemm1024.best_gflops.toFixed(1)} best of 11`,
  ];
}

// ---- the cases -----------------------------------------------------------------------------

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
    repeats: n >= 1024 ? 3 : 5, warmup: 1,
    differs: "different algorithms: ours against LAPACK's gesdd",
    async setup(dir) {
      a = randomNormal(n, n, createRng(n).normal);
      return { name: this.name, kind: 'svd', params: { path: writeRaw(dir, `svd${n}.bin`, a.data), n } };
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
    repeats: 3, warmup: 1,
    async setup(dir) {
      a = await decayingMatrix(n, n, Math.min(512, n), createRng(7 + n), engine, true);
      return { name: this.name, kind: 'rsvd', params: { path: writeRaw(dir, `rsvd${n}.bin`, a.data), n, rank, p: 10, q: 2 } };
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
function gemmCase(n: number, label: string, product: (a: Matrix, b: Matrix) => Promise<number>): Case {
  let a: Matrix, b: Matrix;
  return {
    name: `GEMM ${n}^3 fp32 (${label})`,
    repeats: quick ? 11 : 41, // 20 ms each: more repeats make the median robust to other processes
    warmup: 5,
    flops: 2 * n ** 3,
    differs: `ORT (${label}) against numpy's BLAS`,
    async setup(dir) {
      const rng = createRng(3);
      a = randomNormal(n, n, rng.normal, true);
      b = randomNormal(n, n, rng.normal, true);
      return { name: this.name, kind: 'gemm', params: { a: writeRaw(dir, `ga${n}.bin`, a.data), b: writeRaw(dir, `gb${n}.bin`, b.data), n, dtype: 'float32' } };
    },
    async run() {
      const rows = await product(a, b);
      return () => (rows === n * n ? 0 : NaN);
    },
  };
}

const engineProduct = (e: GemmEngine) => async (a: Matrix, b: Matrix) => (await e.matmul(a, b)).data.length;

function rawOrtProduct(sessions: ort.InferenceSession[]): (a: Matrix, b: Matrix) => Promise<number> {
  return async (a, b) => {
    if (!sessions[0]) {
      const bytes = encodeGemmModel({ elemType: ONNX_FLOAT, transA: false, transB: false });
      sessions.push(await ort.InferenceSession.create(bytes, { intraOpNumThreads: THREADS, interOpNumThreads: 1 }));
    }
    const out = await sessions[0]!.run({ A: new ort.Tensor('float32', a.data as Float32Array, [a.rows, a.cols]), B: new ort.Tensor('float32', b.data as Float32Array, [b.rows, b.cols]) });
    return out['Y']!.data.length;
  };
}

function jsGemmCase(n: number): Case {
  let a: Matrix, b: Matrix;
  return {
    name: `GEMM ${n}^3 fp64 (pure JS)`,
    repeats: 3, warmup: 1,
    flops: 2 * n ** 3,
    differs: "one-thread JS kernel against numpy's BLAS",
    async setup(dir) {
      const rng = createRng(4);
      a = randomNormal(n, n, rng.normal);
      b = randomNormal(n, n, rng.normal);
      return { name: this.name, kind: 'gemm', params: { a: writeRaw(dir, `ja${n}.bin`, a.data), b: writeRaw(dir, `jb${n}.bin`, b.data), n, dtype: 'float64' } };
    },
    async run() {
      gemm(a, b);
      return () => 0;
    },
  };
}

function tuckerCase(engine: GemmEngine, T: number, S: number, r: number, iters: number): Case {
  const k = 9;
  let w: Float64Array;
  return {
    name: `Tucker-2 ${T}x${S}x3x3 (${r},${r}), ${iters} HOOI`,
    repeats: 3, warmup: 1,
    async setup(dir) {
      // Kernel with decaying spectra on both channel modes: G ×₁ A ×₂ B, A and B column-scaled Gaussians.
      const rng = createRng(11);
      const d = Array.from({ length: T }, (_, i) => 1 / Math.pow(1 + i, 0.6));
      const a = scaleCols(randomNormal(T, T, rng.normal), d);
      const b = scaleCols(randomNormal(S, S, rng.normal), d.slice(0, S));
      const g = randomNormal(T, S * k, rng.normal).data as Float64Array;
      w = await runAsync(reconstructTucker2(g, a, b), engine);
      return { name: this.name, kind: 'tucker', params: { path: writeRaw(dir, `tucker${T}.bin`, w), T, S, k, r1: r, r2: r, iters } };
    },
    async run() {
      // The relative error is part of the algorithm's own output here (and of numpy's run).
      const res = await tucker2({ data: w, shape: [T, S, 3, 3] }, [r, r], { engine, maxIter: iters, tol: -1, svd: { seed: 1 } });
      return () => res.relError;
    },
  };
}

function cpCase(engine: GemmEngine, T: number, S: number, R: number, iters: number): Case {
  const k = 9;
  let x: Float64Array;
  return {
    name: `CP-ALS rank ${R} ${T}x${S}x3x3, ${iters} iters`,
    repeats: 3, warmup: 1,
    async setup(dir) {
      // Rank-1.5R CP tensor plus noise: a rank-R fit cannot be exact, as with real kernels.
      const rng = createRng(12);
      const true_ = Math.round(1.5 * R);
      const fs = [randomNormal(T, true_, rng.normal), randomNormal(S, true_, rng.normal), randomNormal(k, true_, rng.normal)];
      const dense = gemm(fs[0]!, khatriRao(fs.slice(1)), { transB: true }).data;
      x = dense.map((v) => v + 0.5 * rng.normal()) as Float64Array;
      return { name: this.name, kind: 'cp', params: { path: writeRaw(dir, `cp${T}.bin`, x), T, S, k, R, iters } };
    },
    async run() {
      const res = await cpAls({ data: x, shape: [T, S, k] }, R, { engine, maxIter: iters, tol: -1, seed: 1 });
      return () => res.relError;
    },
  };
}

/** Best fp32 GEMM rate of a bare ORT session at n³ (best of 5 after 2 warm-ups). */
async function ortPeak(n: number, product: (a: Matrix, b: Matrix) => Promise<number>): Promise<number> {
  const rng = createRng(5);
  const a = randomNormal(n, n, rng.normal, true);
  const b = randomNormal(n, n, rng.normal, true);
  for (let i = 0; i < 2; i++) await product(a, b);
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await product(a, b);
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return 2 * n ** 3 / best / 1e9;
}

// ---- the run -------------------------------------------------------------------------------

async function main(): Promise<void> {
  const load0 = loadLine();
  const engine = createOrtGemmEngine({ threads: THREADS });
  const spinning = createOrtGemmEngine({ threads: THREADS, spinning: true });
  const raw: ort.InferenceSession[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'bench-linalg-'));
  const say = (s: string): void => { if (!json) console.log(s); };
  const ref = await NumpyRef.start(THREADS);
  try {
    const n = quick ? 512 : 1024;
    const cases = (quick
      ? [
        gemmCase(n, 'ORT engine', engineProduct(engine)), gemmCase(n, 'raw ORT session', rawOrtProduct(raw)), jsGemmCase(256),
        svdCase(128, engine, false), svdCase(256, engine, true), rsvdCase(512, 32, engine),
        tuckerCase(engine, 128, 128, 16, 3), tuckerCase(engine, 128, 128, 56, 3), cpCase(engine, 64, 64, 16, 5),
      ]
      : [
        gemmCase(n, 'ORT engine', engineProduct(engine)), gemmCase(n, 'ORT engine, spinning', engineProduct(spinning)), gemmCase(n, 'raw ORT session', rawOrtProduct(raw)),
        jsGemmCase(1024), svdCase(512, engine, false), svdCase(512, engine, true), svdCase(1024, engine, false), svdCase(1024, engine, true),
        rsvdCase(2048, 128, engine), rsvdCase(4096, 128, engine), tuckerCase(engine, 512, 512, 128, 5), cpCase(engine, 256, 256, 64, 25),
      ]).filter((c) => !only || c.name.toLowerCase().includes(only.toLowerCase()));

    let refused: string | null;
    if (typeof ref === 'string') {
      refused = ref;
      say(`reference: none (${ref}); numpy columns left empty`);
    } else {
      for (const l of describeRef(ref.probe)) say(l);
      refused = refusal(ref.probe, THREADS);
    }
    if (typeof ref !== 'string') say(refused ? `  REFUSED: ${refused}; numpy columns left empty` : '  accepted as an optimized reference');
    const ortBest = await ortPeak(PEAK_N, rawOrtProduct(raw));
    const npBest = typeof ref === 'string' || refused ? 0 : ref.probe.peak.best_gflops;
    say(`threads: ${THREADS} on both sides; each case: warm-up runs on both sides, then the sides alternate run by run (${PAUSE_MS} ms pause before each); medians`);
    const busy = loadavg()[0]! > cpus().length;
    if (busy) say(`warning: load average ${load0} on ${cpus().length} cores: the machine is busy, the figures below are unreliable`);
    say('');

    const np = typeof ref === 'string' || refused ? null : ref;
    const rows: Row[] = [];
    const measured: { c: Case; ours: Timing; ref: Timing | null; err: number; refErr: number | null }[] = [];
    for (const c of cases) {
      const spec = await c.setup(dir);
      let npOk = np !== null;
      if (np) {
        try {
          await np.request({ op: 'setup', case: spec });
        } catch (e) {
          if (!(e instanceof RefError)) throw e;
          npOk = false;
          process.stderr.write(`numpy reference failed for ${c.name}: ${e.message}\n`);
        }
      }
      let check: Check = () => NaN;
      const ours = async (): Promise<number> => {
        const t0 = performance.now();
        check = await c.run();
        return (performance.now() - t0) / 1000;
      };
      const theirs = async (): Promise<number> => (await np!.request({ op: 'run', name: c.name })).s as number;
      let oursT: Timing, refT: Timing | null = null, refErr: number | null = null;
      try {
        for (let w = 0; w < c.warmup; w++) { await c.run(); if (npOk) await theirs(); }
        const ts = await alternate(npOk ? [ours, theirs] : [ours], c.repeats, npOk ? PAUSE_MS : 0);
        oursT = ts[0]!;
        if (npOk) {
          refT = ts[1]!;
          refErr = (await np!.request({ op: 'check', name: c.name })).err as number;
        }
      } catch (e) {
        if (!(e instanceof RefError)) throw e;
        // The numpy side failed mid-case: measure ours alone.
        process.stderr.write(`numpy reference failed for ${c.name}: ${(e as Error).message}\n`);
        oursT = (await alternate([ours], c.repeats))[0]!;
        refT = null;
      }
      measured.push({ c, ours: oursT, ref: refT, err: await check(), refErr });
      if (!json) process.stderr.write(`  measured ${c.name}\n`);
    }
    // The peak: the best fp32 GEMM rate seen in this run (the dedicated n³ runs of both
    // sides, and the best run of every fp32 GEMM case), so no share exceeds 100%.
    const f32Gemm = measured.filter((m) => m.c.flops && m.c.name.includes('fp32'));
    const peak = Math.max(ortBest, npBest, ...f32Gemm.flatMap((m) => [m.ours.min, ...(m.ref ? [m.ref.min] : [])].map((s) => m.c.flops! / s / 1e9)));
    for (const { c, ours: oursT, ref: refT, err, refErr } of measured) {
      const gemmRow = c.name.startsWith('GEMM');
      rows.push({
        case: c.name, ours_s: round(oursT.median), ref_s: refT ? round(refT.median) : null, ratio: refT ? round(oursT.median / refT.median) : null,
        ours_spread: [round(oursT.min), round(oursT.max)], ref_spread: refT ? [round(refT.min), round(refT.max)] : null, runs: c.repeats,
        rel_err: gemmRow ? null : err, ref_rel_err: refT && !gemmRow ? refErr : null,
        ...(c.flops ? { gflops: round(c.flops / oursT.median / 1e9), peak_share: round(c.flops / oursT.median / 1e9 / peak) } : {}),
        note: [
          c.flops ? `${(c.flops / oursT.median / 1e9).toFixed(c.flops / oursT.median / 1e9 < 10 ? 2 : 1)} GFLOP/s = ${(c.flops / oursT.median / 1e9 / peak * 100).toFixed(0)}% of peak` : '',
          refT ? c.differs ?? 'same algorithm' : '',
        ].filter(Boolean).join('; '),
      });
    }
    if (json) {
      console.log(JSON.stringify({
        reference: typeof ref === 'string' ? null : ref.probe, refused, threads: THREADS, peak_gflops: round(peak),
        peak_from: { ort: round(ortBest), numpy: npBest ? round(npBest) : null, n: PEAK_N }, load_start: load0, load_end: loadLine(), busy,
      }));
      for (const r of rows) console.log(JSON.stringify(r));
    } else {
      printTable(rows);
      console.log(`peak ${peak.toFixed(1)} GFLOP/s: the best fp32 GEMM rate measured in this run (${PEAK_N}³: ORT ${ortBest.toFixed(1)}` +
        `${npBest ? `, numpy ${npBest.toFixed(1)}` : ''}; and the GEMM cases' best runs), not a datasheet figure`);
      console.log(`load average at start: ${load0}, at end: ${loadLine()}`);
    }
    if (!rows.some((r) => r.ref_s !== null)) {
      process.stderr.write(`bench-linalg: no case could be compared with numpy${refused ? ` (${refused})` : ''}\n`);
      process.exitCode = 1;
    }
  } finally {
    if (typeof ref !== 'string') await ref.close();
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
