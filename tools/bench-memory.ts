/**
 * npm run bench:memory [-- --layers 14] [--k 4096] [--n 11008] [--dir DIR] [--keep]
 *                      [--only build,inspect,convert,optimize,optimize-plan,verify-one,latency-one]
 *                      [--no-verify] [--json]
 *
 * Peak memory of each command on a synthetic model over 2 GiB with external data
 * (tools/make-big-model.ts: 14 MatMul weights of 4096×11008 fp32 by default, 2.52 GB).
 * Every step runs in its own child process (`node --import tsx`); its peak RSS is the
 * kernel's high-water mark (VmHWM) read at exit. Prints peak RSS / model size per command
 * against the target of 2 × model size + 300 MB.
 *
 * optimize-plan (default) applies rank 64 to every layer through a plan file; optimize
 * (opt in: --only …,optimize) runs `--rank 64` itself: a fixed rank asks the SVD for only
 * 64 values, so each 4096×11008 layer takes the randomized path (measured: 791 s for the
 * 14 layers with verification, on a loaded machine; peak 2,980 MB = 1.24× the model).
 *
 * verify-one (default) rewrites one layer only, so OUT is about as big as IN: the heaviest
 * case for verification, which loads one model at a time (the original runs on every feed,
 * is released, then the optimized one runs). latency-one (default) is the same run with
 * latency measured: the timing interleaves the two models' runs, so both ORT sessions are
 * alive at once by design and the peak is about ORT's share of IN + OUT; it is reported
 * against that, not against 2 × model (a model that compresses stays under 2×).
 *
 * A step that dies before reporting its peak (killed by a signal, e.g. by the OOM killer)
 * has no known peak: its row reads "unknown" and fails the run, as does a peak over the
 * target or a failed step (exit 1 from optimize, a failed check, is not a failure here).
 * A quick check that the tool works: `npm run bench:memory -- --layers 2 --k 256 --n 512`.
 *
 * Needs about 2 × model size of free disk in DIR (the model and convert's copy).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bigModelFiles } from './make-big-model.js';

const SELF = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(SELF), '..');
const MB = 1024 * 1024;
/** Steps that run optimize: exit 1 (verification failed, OUT still written) is a result there, not a failure. */
const OPTIMIZE_STEPS = new Set(['optimize', 'optimize-plan', 'verify-one', 'latency-one']);

function vmHwmBytes(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : -1;
}

// ---- child mode: run one step, write {code, peak} to BENCH_RESULT --------------------------

async function child(args: string[]): Promise<void> {
  const result = process.env.BENCH_RESULT!;
  let code = 0;
  if (args[0] === 'build') {
    const { makeBigModel } = await import('./make-big-model.js');
    const [dir, layers, k, n] = [args[1], Number(args[2]), Number(args[3]), Number(args[4])];
    const r = makeBigModel(dir, { layers, k, n });
    process.stdout.write(`wrote ${r.path} + ${r.externalPath} (${r.totalBytes} bytes)\n`);
  } else {
    const { main } = await import('../src/cli/main.js');
    code = await main(args.slice(1));
  }
  fs.writeFileSync(result, JSON.stringify({ code, peak: vmHwmBytes() }));
  process.exitCode = code;
}

// ---- parent -------------------------------------------------------------------------------

/** `peak` is -1 when unknown (the step died before writing its result, e.g. killed by a signal). */
interface Step { name: string; args: string[]; code: number; signal: string | null; seconds: number; peak: number }

function runStep(name: string, args: string[], log: string): Promise<Step> {
  const result = path.join(os.tmpdir(), `onnx-lr-bench-mem-${process.pid}-${name}.json`);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const out = fs.openSync(log, 'a');
    fs.writeSync(out, `\n$ ${name}: ${args.join(' ')}\n`);
    const p = spawn(process.execPath, ['--import', 'tsx', SELF, '--child', ...args], {
      cwd: ROOT, env: { ...process.env, BENCH_RESULT: result }, stdio: ['ignore', out, out],
    });
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      fs.closeSync(out);
      let peak = -1;
      let exit = code ?? -1;
      try {
        const r = JSON.parse(fs.readFileSync(result, 'utf8')) as { code: number; peak: number };
        peak = r.peak;
        exit = r.code;
        fs.rmSync(result);
      } catch {
        if (signal) exit = -1;
      }
      resolve({ name, args, code: exit, signal: signal ?? null, seconds: (performance.now() - t0) / 1000, peak });
    });
  });
}

/** Bytes of OUT and the data files beside it (named OUT.<hash>.data), removed after measuring: only the peak matters. */
function takeOutput(out: string): number {
  const dir = path.dirname(out);
  const base = path.basename(out);
  let bytes = 0;
  for (const f of fs.readdirSync(dir)) {
    if (f !== base && !f.startsWith(`${base}.`)) continue;
    bytes += fs.statSync(path.join(dir, f)).size;
    fs.rmSync(path.join(dir, f));
  }
  return bytes;
}

async function parent(argv: string[]): Promise<void> {
  const opt = (name: string): string | undefined => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; };
  const layers = Number(opt('layers') ?? 14);
  const k = Number(opt('k') ?? 4096);
  const n = Number(opt('n') ?? 11008);
  const only = new Set((opt('only') ?? 'build,inspect,convert,optimize-plan,verify-one,latency-one').split(','));
  const json = argv.includes('--json');
  const dir = opt('dir') ?? fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-bench-mem-'));
  fs.mkdirSync(dir, { recursive: true });
  const log = path.join(dir, 'bench-memory.log');
  const model = path.join(dir, 'big.onnx');
  const say = (s: string): void => { if (!json) process.stdout.write(`${s}\n`); };
  say(`model folder ${dir} (log: ${log})`);

  const steps: Step[] = [];
  const baseline = await runStep('baseline', ['cli', '--version'], log);
  if (only.has('build') || !bigModelFiles(dir)) {
    say(`building ${layers} weights of ${k}x${n} fp32 …`);
    steps.push(await runStep('build', ['build', dir, String(layers), String(k), String(n)], log));
  }
  // The data file's name carries a hash of its content: read it from the model.
  const size = bigModelFiles(dir)?.totalBytes ?? 0;
  say(`model: ${(size / MB).toFixed(0)} MB (${(size / 2 ** 30).toFixed(2)} GiB)`);
  const outDir = path.join(dir, 'out');
  fs.mkdirSync(outDir, { recursive: true });
  if (only.has('inspect')) steps.push(await runStep('inspect', ['cli', 'inspect', model], log));
  if (only.has('convert')) {
    steps.push(await runStep('convert', ['cli', 'convert', model, path.join(outDir, 'converted.onnx')], log));
    // The copy is only there to be measured: free the disk.
    for (const f of fs.readdirSync(outDir)) if (f.startsWith('converted')) fs.rmSync(path.join(outDir, f));
  }
  const verify = argv.includes('--no-verify') ? ['--no-verify'] : ['--no-latency'];
  if (only.has('optimize')) {
    steps.push(await runStep('optimize', ['cli', 'optimize', model, path.join(outDir, 'optimized.onnx'), '--rank', '64', ...verify, '--report', path.join(outDir, 'report.json')], log));
  }
  const planFor = (file: string, names: string[]): string => {
    fs.writeFileSync(file, JSON.stringify({ version: 1, model, policy: 'plan', layers: names.map((name) => ({ name, pass: 'matmul-svd', ranks: [64] })) }));
    return file;
  };
  const outBytes: Record<string, number> = {};
  const optimizeStep = async (name: string, plan: string, flags: string[]): Promise<void> => {
    const out = path.join(outDir, `${name}.onnx`);
    steps.push(await runStep(name, ['cli', 'optimize', model, out, '--plan', plan, ...flags, '--report', path.join(outDir, `${name}.json`)], log));
    outBytes[name] = takeOutput(out);
  };
  if (only.has('optimize-plan')) {
    // The same rank-64 rewrite of every layer through a plan: no rank search, only the rank-64 factorization.
    const names = Array.from({ length: layers }, (_, i) => `mm${i}`);
    await optimizeStep('optimize-plan', planFor(path.join(outDir, 'plan.json'), names), verify);
  }
  // One layer rewritten: OUT is about as big as IN.
  const one = only.has('verify-one') || only.has('latency-one') ? planFor(path.join(outDir, 'plan-one.json'), ['mm0']) : '';
  if (only.has('verify-one')) await optimizeStep('verify-one', one, verify);
  if (only.has('latency-one') && !argv.includes('--no-verify')) await optimizeStep('latency-one', one, []);

  const target = (s: number): number => 2 * s + 300 * MB;
  // Interleaved timing holds both models in ORT (about 1.1 × each: its packed weights and
  // load-time copies) by design: judged against that, see the header.
  const latencyTarget = (s: number, out: number): number => 1.15 * (s + out) + 300 * MB;
  const targetOf = (st: Step): number => (st.name === 'latency-one' ? latencyTarget(size, outBytes[st.name] ?? size) : target(size));
  // A step that died before reporting (killed by a signal, out of memory) has no known
  // peak: that is not a pass, so its row reads "unknown" and fails the run.
  const known = (s: Step): boolean => s.peak >= 0;
  const rows = steps.map((s) => ({
    step: s.name, exit: s.code, ...(s.signal ? { signal: s.signal } : {}), seconds: Math.round(s.seconds * 10) / 10,
    peak_mb: known(s) ? Math.round(s.peak / MB) : null,
    ratio: s.name === 'build' || !known(s) ? null : Math.round((s.peak / size) * 100) / 100,
    target_mb: s.name === 'build' ? null : Math.round(targetOf(s) / MB),
    within_target: s.name === 'build' ? null : known(s) ? s.peak <= targetOf(s) : 'unknown',
  }));
  if (json) {
    process.stdout.write(`${JSON.stringify({ model_bytes: size, baseline_peak_mb: known(baseline) ? Math.round(baseline.peak / MB) : null, target_mb: Math.round(target(size) / MB), steps: rows }, null, 2)}\n`);
  } else {
    say(`baseline (node + tsx + onnxruntime, --version): ${known(baseline) ? `${Math.round(baseline.peak / MB)} MB` : 'unknown'}`);
    say(`target: peak <= 2 x model + 300 MB = ${Math.round(target(size) / MB)} MB (latency-one: 1.15 x (IN + OUT) + 300 MB)`);
    say('step              exit  seconds  peak RSS MB  peak / model  target MB  within target');
    for (const r of rows) {
      const exit = r.signal ?? String(r.exit);
      const within = r.within_target === null ? '' : r.within_target === 'unknown' ? 'unknown (no peak: FAIL)' : r.within_target ? 'yes' : 'NO';
      say(`${r.step.padEnd(14)} ${exit.padStart(7)}  ${r.seconds.toFixed(1).padStart(7)}  ${(r.peak_mb === null ? 'unknown' : String(r.peak_mb)).padStart(11)}  ${(r.ratio === null ? '' : r.ratio.toFixed(2)).padStart(12)}  ${(r.target_mb === null ? '' : String(r.target_mb)).padStart(9)}  ${within}`);
    }
  }
  if (!argv.includes('--keep') && !opt('dir')) fs.rmSync(dir, { recursive: true, force: true });
  const failed = steps.some((s) => !known(s) || (s.name !== 'build' && s.peak > targetOf(s)) || (s.code !== 0 && !(OPTIMIZE_STEPS.has(s.name) && s.code === 1)));
  if (failed) process.exitCode = 1;
}

const argv = process.argv.slice(2);
if (argv[0] === '--child') await child(argv.slice(1));
else await parent(argv);
