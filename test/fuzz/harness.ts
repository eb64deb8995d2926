/**
 * Runs fuzz cases through the CLI in a child process (test/fuzz/worker.ts) with a per-case
 * time limit, and judges every outcome against the CLI contract:
 * - exit 0/1: OUT (convert/optimize) exists, our loader reads it, and ORT loads it whenever
 *   ORT loads IN; nothing on stderr;
 * - exit 2: exactly one stderr line starting `onnx-lr: `, no `internal error`, no stack
 *   trace; convert leaves no OUT (optimize may have written OUT before verification);
 * - always: no hang, no crash, IN and its data files unchanged, no temp files left beside
 *   OUT, peak RSS bounded (an allocation sized by an untrusted dim would show here).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { isProgressLine } from '../../src/cli/progress.js';
import { createRng } from '../../src/util/rng.js';
import { caseSeed, materialize, REAL_BASES, type Base, type Case, type Family, type Recipe } from './mutate.js';
import type { Job, JobResult } from './worker.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REGRESSION_DIR = path.join(HERE, 'regressions');

/**
 * A hang is judged by the CPU time a command used, not by the wall clock: on a busy
 * machine (2 cores shared by several jobs) a command waits for a core and its wall time
 * grows several-fold, while the CPU time its work needs does not. A command that computes
 * past its CPU limit (ms; normal cases need well under 3 s) is a hang, whatever the load.
 */
export const CPU_LIMIT_MS = { inspect: 15_000, convert: 15_000, optimize: 45_000 } as const;
/**
 * A command that blocks without computing (an open on a FIFO, a deadlock) never reaches
 * its CPU limit: the wall clock catches it, at a limit 100 times the slowest normal case,
 * which no load slow-down reaches. Where the CPU time cannot be read (no /proc), this is
 * the only limit.
 */
export const WALL_LIMIT_MS = 300_000;
/** How often the worker's CPU time is read. */
const POLL_MS = 250;
/** Linux reports CPU time in USER_HZ ticks, 100 per second on every architecture it runs on. */
const TICK_MS = 10;
/** Peak RSS a single command on these small inputs may reach (MB). */
export const PEAK_LIMIT_MB = 1200;
/** Commands slower than this are listed in the summary. */
const SLOW_MS = 3000;

type Cmd = keyof typeof CPU_LIMIT_MS;

/** `timeout`: which limit the command passed ('cpu': computing, 'wall': blocked). */
export type Outcome = JobResult & { timeout?: 'cpu' | 'wall'; crash?: string };

/** CPU time (user + system, all threads) a process has used, in ms; undefined without /proc. */
function cpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces), from field 3 on: utime and stime are 14 and 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * TICK_MS;
  } catch {
    return undefined;
  }
}

export class FuzzWorker {
  private child: ChildProcess | undefined;
  private pending: { id: number; resolve: (r: Outcome) => void } | undefined;
  private nextId = 1;
  restarts = 0;

  private async start(): Promise<void> {
    const child = fork(path.join(HERE, 'worker.ts'), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...process.env, ONNX_LR_DEBUG: '' },
    });
    child.stderr?.resume(); // ORT may log natively; drain it
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: unknown): void => { if ((m as { ready?: boolean }).ready) { child.off('message', onMsg); resolve(); } };
      child.on('message', onMsg);
      child.once('exit', (c) => reject(new Error(`fuzz worker exited during start-up (${c})`)));
    });
    child.removeAllListeners('exit');
    child.on('message', (m: unknown) => {
      const r = m as JobResult;
      if (this.pending && (r.id === this.pending.id || r.id === -1)) {
        const p = this.pending;
        this.pending = undefined;
        p.resolve(r.id === -1 ? { ...r, id: p.id } : r);
      }
    });
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      const p = this.pending;
      this.pending = undefined;
      p?.resolve({ id: p.id, code: -1, out: '', err: '', ms: 0, peakMb: -1, crash: `worker exited (${code ?? signal})` });
    });
    this.child = child;
  }

  /** Runs one command; it is killed as a hang past `cpuLimitMs` of CPU time or `wallLimitMs` of wall time. */
  async run(argv: string[], cpuLimitMs: number, extra: { out?: string; in?: string } = {}, wallLimitMs = WALL_LIMIT_MS): Promise<Outcome> {
    if (!this.child) await this.start();
    const id = this.nextId++;
    const job: Job = { id, argv, ...extra };
    const child = this.child!;
    const t0 = performance.now();
    const cpu0 = cpuMs(child.pid);
    return new Promise<Outcome>((resolve) => {
      const kill = (why: 'cpu' | 'wall'): void => {
        if (this.pending?.id !== id) return;
        this.pending = undefined;
        clearTimeout(timer);
        clearInterval(poll);
        this.restarts++;
        this.child = undefined;
        child.kill('SIGKILL');
        resolve({ id, code: -1, out: '', err: '', ms: performance.now() - t0, peakMb: -1, timeout: why });
      };
      const timer = setTimeout(() => kill('wall'), wallLimitMs);
      const poll = setInterval(() => {
        const used = cpuMs(child.pid);
        if (cpu0 !== undefined && used !== undefined && used - cpu0 > cpuLimitMs) kill('cpu');
      }, POLL_MS);
      this.pending = { id, resolve: (r) => { clearTimeout(timer); clearInterval(poll); resolve(r); } };
      child.send(job);
    });
  }

  stop(): void {
    const c = this.child;
    this.child = undefined;
    if (c) { c.send('exit'); setTimeout(() => c.kill('SIGKILL'), 2000).unref(); }
  }
}

const sha = (f: string): string => {
  try { return createHash('sha1').update(fs.readFileSync(f)).digest('hex'); } catch (e) { return `unreadable: ${(e as NodeJS.ErrnoException).code}`; }
};

export interface Failure {
  recipe: Recipe;
  desc: string[];
  argv: string[];
  problems: string[];
  code: number;
  err: string;
  /** The case's full plan (saved with a regression so the replay runs the same commands). */
  plan?: Plan;
}

/**
 * Known defects in code this suite may not change, reported instead of failing the run.
 * Each names the file, and matches its symptom precisely (anything else still fails).
 */
export const KNOWN: { id: string; where: string; match: (cmd: Cmd, problem: string) => boolean }[] = [
  // Empty: 'gemm-svd-opset<11-matmul' (an OUT ORT refused while it loaded IN) is fixed —
  // optimize now loads the rewritten model in ORT before writing it.
];

/** The verdict on one command's outcome. */
export function judge(cmd: Cmd, r: Outcome, dirs: readonly string[]): string[] {
  const p: string[] = [];
  if (r.timeout === 'cpu') return [`over ${CPU_LIMIT_MS[cmd]} ms of CPU time without an answer (hang)`];
  if (r.timeout) return [`no answer within ${WALL_LIMIT_MS} ms, using little CPU (blocked)`];
  if (r.crash) return [`the process died: ${r.crash}`];
  if (r.threw) p.push(`main() threw: ${r.threw.split('\n')[0]}`);
  if (![0, 1, 2].includes(r.code)) p.push(`exit code ${r.code}`);
  if (r.code === 1 && cmd !== 'optimize') p.push(`${cmd} returned 1`);
  if (r.code === 2) {
    const lines = r.err.replace(/\n$/, '').split('\n');
    if (lines.length !== 1) p.push(`stderr has ${lines.length} lines`);
    if (!lines[0].startsWith('onnx-lr: ')) p.push('stderr does not start with "onnx-lr: "');
    if (/internal error/.test(r.err)) p.push(`internal error: ${lines[0]}`);
    if (/\n\s+at |\bat .+:\d+:\d+\)/.test(r.err)) p.push('stack trace on stderr');
    if (cmd === 'convert' && r.outExists) p.push('convert wrote OUT and exited 2');
    if (cmd === 'optimize' && r.outExists && r.inOrt === '' && r.outOrt !== '') p.push(`optimize wrote an OUT that ORT rejects while it loads IN: ${r.outOrt}`);
  } else if (r.code === 0 || r.code === 1) {
    // Progress lines print once a run passes 10 s, which a loaded machine decides: not a finding.
    const noise = r.err === '' ? [] : r.err.replace(/\n$/, '').split('\n').filter((l) => !isProgressLine(l));
    if (noise.length > 0) p.push(`stderr on success: ${noise[0]}`);
    if (cmd === 'inspect' && r.out.trim() === '') p.push('inspect printed nothing');
    if (cmd !== 'inspect') {
      if (!r.outExists) p.push('OUT missing after success');
      else {
        if (r.outLoad) p.push(`our loader rejects OUT: ${r.outLoad}`);
        if (r.inOrt === '' && r.outOrt) p.push(`ORT loads IN but not OUT: ${r.outOrt}`);
      }
    }
  }
  if (r.peakMb > PEAK_LIMIT_MB) p.push(`peak RSS ${r.peakMb} MB > ${PEAK_LIMIT_MB} MB`);
  // Temp files beside OUT, or a shape probe left beside IN.
  const leftovers = dirs.flatMap((d) => (fs.existsSync(d) ? fs.readdirSync(d).filter((f) => /^\.onnx-lr-\d+-\d+\.tmp/.test(f) || f.includes('.tmp-')) : []));
  if (leftovers.length) p.push(`temp files left: ${leftovers.join(', ')}`);
  return p;
}

/** The external family's outside file is filled with 0x41: a long run of it in OUT means it was read. */
function leaksOutside(out: string): boolean {
  const marker = Buffer.alloc(64, 0x41);
  // OUT and its data file (OUT.<hash>.data, named by its content).
  const dir = path.dirname(out);
  const files = [out, ...(fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.startsWith(`${path.basename(out)}.`) && n.endsWith('.data')).map((n) => path.join(dir, n)) : [])];
  return files.some((f) => fs.existsSync(f) && fs.readFileSync(f).includes(marker));
}

export interface Plan {
  inspect: boolean;
  convert: string[] | false;
  optimize: string[] | false;
}

export interface CaseReport { failures: Failure[]; known: string[]; commands: number; slow: { what: string; ms: number }[]; peakMb: number; statuses: string[]; messages: string[]; ms: Record<string, number> }

/** An error line with paths, names and numbers blanked, to group messages. */
const shapeOf = (line: string): string => line.replace(/\/[^\s:"]+/g, 'PATH').replace(/"[^"]*"/g, '"…"').replace(/\d+/g, 'N').slice(0, 110);

/** Materializes one recipe in `root` and runs its plan; returns the failures. */
export async function runCase(w: FuzzWorker, recipe: Recipe, plan: Plan, root: string): Promise<CaseReport> {
  const dir = fs.mkdtempSync(path.join(root, 'c-'));
  let c: Case;
  try {
    c = materialize(recipe, dir);
  } catch (e) {
    return { failures: [{ recipe, desc: [], argv: [], problems: [`materialize failed: ${(e as Error).stack}`], code: -1, err: '' }], commands: 0, slow: [], peakMb: 0, statuses: [], messages: [], ms: {}, known: [] };
  }
  try {
    return await runMaterialized(w, c, plan, dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs a plan on a case already written to `dir` (its model and inputs inside it). */
export async function runMaterialized(w: FuzzWorker, c: Case, plan: Plan, dir: string): Promise<CaseReport> {
  const recipe = c.recipe;
  const outDir = path.join(dir, 'out');
  const before = c.inputs.map(sha);
  const rep: CaseReport = { failures: [], commands: 0, slow: [], peakMb: 0, statuses: [], messages: [], ms: {}, known: [] };
  const jobs: [Cmd, string[], { out?: string; in?: string }][] = [];
  if (plan.inspect) jobs.push(['inspect', ['inspect', c.model, ...c.args, ...(recipe.seed % 2 ? ['--json'] : [])], {}]);
  fs.mkdirSync(outDir, { recursive: true });
  if (plan.convert) {
    const out = path.join(outDir, 'conv.onnx');
    jobs.push(['convert', ['convert', c.model, out, ...plan.convert], { out, in: c.model }]);
  }
  if (plan.optimize) {
    const out = path.join(outDir, 'opt.onnx');
    jobs.push(['optimize', ['optimize', c.model, out, ...c.args, ...plan.optimize], { out, in: c.model }]);
  }
  for (const [cmd, argv, extra] of jobs) {
    const r = await w.run(argv, CPU_LIMIT_MS[cmd], extra);
    rep.commands++;
    rep.peakMb = Math.max(rep.peakMb, r.peakMb);
    rep.statuses.push(`${cmd}:${r.timeout ? 'T' : r.crash ? 'X' : r.code}`);
    rep.ms[cmd] = (rep.ms[cmd] ?? 0) + r.ms;
    if (r.code === 2) rep.messages.push(`${cmd}: ${shapeOf(r.err.split('\n')[0])}`);
    if (r.ms > SLOW_MS) rep.slow.push({ what: `${cmd} ${JSON.stringify(c.recipe)} ${c.desc.join('; ')}`, ms: Math.round(r.ms) });
    let problems = judge(cmd, r, [outDir, path.dirname(c.model)]);
    if (recipe.family === 'external' && extra.out && (r.code === 0 || r.code === 1) && leaksOutside(extra.out)) {
      problems.push('OUT holds bytes of the file outside the model folder');
    }
    const after = c.inputs.map(sha);
    if (after.some((h, i) => h !== before[i])) problems.push('an input file changed');
    problems = problems.filter((p) => {
      const k = KNOWN.find((x) => x.match(cmd, p));
      if (k) rep.known.push(`${k.id}: ${JSON.stringify(c.recipe)}`);
      return !k;
    });
    if (problems.length) rep.failures.push({ recipe: c.recipe, desc: c.desc, argv, problems, code: r.code, err: r.err.slice(0, 500), plan });
  }
  return rep;
}

export interface SuiteOptions {
  family: Family;
  cases: number;
  /** Relative weights of the bases. */
  bases: Partial<Record<Base, number>>;
  /** Probability that a case also runs optimize, per base (default 0). */
  optimizeRate: Partial<Record<Base, number>>;
  runSeed: number;
}

export interface SuiteReport {
  family: Family;
  runSeed: number;
  cases: number;
  commands: number;
  seconds: number;
  failures: Failure[];
  slow: { what: string; ms: number }[];
  peakMb: number;
  restarts: number;
  /** How often each command ended how (e.g. "convert:2" → 410). */
  outcomes: Record<string, number>;
  /** Exit-2 messages, grouped by shape. */
  messages: Record<string, number>;
  /** Seconds spent per base and command. */
  seconds_by: Record<string, number>;
  /** Known defects met (see KNOWN), with their recipes. */
  known: string[];
}

/** The run seed: LR_FUZZ_SEED (a number, or "random"), else a fixed default so CI is reproducible. */
export function runSeedFromEnv(dflt: number): number {
  const s = process.env.LR_FUZZ_SEED;
  if (!s) return dflt;
  if (s === 'random') return (Date.now() ^ process.pid) >>> 0;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) throw new Error(`LR_FUZZ_SEED must be a non-negative integer or "random", got ${s}`);
  return n >>> 0;
}

/** LR_FUZZ_SCALE multiplies case counts (e.g. 10 for a longer local run). */
export const scaled = (n: number): number => Math.max(1, Math.round(n * Number(process.env.LR_FUZZ_SCALE ?? 1)));

export function fuzzRoot(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-fuzz-'));
}

export async function runSuite(opts: SuiteOptions): Promise<SuiteReport> {
  const root = fuzzRoot();
  const w = new FuzzWorker();
  const t0 = performance.now();
  const rep: SuiteReport = { family: opts.family, runSeed: opts.runSeed, cases: 0, commands: 0, seconds: 0, failures: [], slow: [], peakMb: 0, restarts: 0, outcomes: {}, messages: {}, seconds_by: {}, known: [] };
  const entries = Object.entries(opts.bases) as [Base, number][];
  const total = entries.reduce((a, [, x]) => a + x, 0);
  try {
    for (let i = 0; i < opts.cases; i++) {
      const seed = caseSeed(opts.runSeed, i);
      const rng = createRng(seed ^ 0x5bd1e995);
      let u = rng.next() * total;
      let base = entries[0][0];
      for (const [b, x] of entries) { if ((u -= x) < 0) { base = b; break; } }
      const recipe: Recipe = { base, family: opts.family, seed };
      const convertArgs = [[], ['--external-data'], ['--external-data', '--threshold', '0'], ['--inline']][rng.int(4)];
      const optimize = rng.next() < (opts.optimizeRate[base] ?? 0)
        ? ['--no-latency', '--min-params', '0', '--rank', String([1, 2, 4][rng.int(3)]), ...(rng.next() < 0.3 ? ['--no-verify'] : []), ...(rng.next() < 0.2 ? ['--external-data'] : [])]
        : false;
      const r = await runCase(w, recipe, { inspect: true, convert: convertArgs, optimize }, root);
      rep.cases++;
      rep.commands += r.commands;
      rep.failures.push(...r.failures);
      rep.known.push(...r.known);
      rep.slow.push(...r.slow);
      rep.peakMb = Math.max(rep.peakMb, r.peakMb);
      for (const s of r.statuses) rep.outcomes[s] = (rep.outcomes[s] ?? 0) + 1;
      for (const m of r.messages) rep.messages[m] = (rep.messages[m] ?? 0) + 1;
      for (const [k, v] of Object.entries(r.ms)) rep.seconds_by[`${base} ${k}`] = (rep.seconds_by[`${base} ${k}`] ?? 0) + v / 1000;
    }
  } finally {
    w.stop();
    rep.restarts = w.restarts;
    rep.seconds = (performance.now() - t0) / 1000;
    fs.rmSync(root, { recursive: true, force: true });
  }
  if (process.env.LR_FUZZ_SAVE) for (const f of rep.failures) saveRegression(f);
  return rep;
}

/** A regression file: the recipe and plan that once failed, and optionally the model itself. */
export interface Regression {
  recipe: Recipe;
  plan: Plan;
  desc: string[];
  problems: string[];
  note: string;
  /** A copy of the mutated model beside the JSON (small synthetic cases): replayed as-is too. */
  file?: string;
}

/**
 * Writes a failing case as a regression (replayed by regressions.test.ts): always the
 * recipe; for a small byte/struct mutation of a synthetic model also the mutated file, so
 * the replay survives changes to the mutators.
 */
export function saveRegression(f: Failure, note = ''): string {
  fs.mkdirSync(REGRESSION_DIR, { recursive: true });
  const kinds = f.recipe.kinds?.join('+') ?? 'case';
  const name = `${f.recipe.family}-${f.recipe.base}-${kinds}-${f.recipe.seed}`;
  const body: Regression = { recipe: f.recipe, plan: f.plan ?? { inspect: true, convert: [], optimize: false }, desc: f.desc, problems: f.problems, note };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-reg-'));
  try {
    const c = materialize(f.recipe, tmp);
    body.desc = c.desc;
    const small = f.recipe.family !== 'external' && !(REAL_BASES as readonly string[]).includes(f.recipe.base) && fs.statSync(c.model).size <= 64 * 1024;
    if (small) {
      fs.copyFileSync(c.model, path.join(REGRESSION_DIR, `${name}.onnx`));
      body.file = `${name}.onnx`;
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const file = path.join(REGRESSION_DIR, `${name}.json`);
  fs.writeFileSync(file, `${JSON.stringify(body, null, 2)}\n`);
  return file;
}

export function summary(r: SuiteReport): string {
  const lines = [
    `fuzz ${r.family}: ${r.cases} cases, ${r.commands} commands in ${r.seconds.toFixed(1)} s (run seed ${r.runSeed}, LR_FUZZ_SEED=${r.runSeed} replays); peak RSS ${r.peakMb} MB; worker restarts ${r.restarts}`,
    `  outcomes: ${Object.entries(r.outcomes).sort().map(([k, v]) => `${k} ${v}`).join(', ')}`,
  ];
  for (const s of r.slow.sort((a, b) => b.ms - a.ms).slice(0, 5)) lines.push(`  slow (${s.ms} ms): ${s.what}`);
  for (const k of r.known.slice(0, 5)) lines.push(`  known defect (not failing the run): ${k}`);
  return lines.join('\n');
}

export function describeFailures(fs_: readonly Failure[]): string {
  return fs_.slice(0, 15).map((f) => [
    `- ${f.problems.join('; ')}`,
    `  recipe ${JSON.stringify(f.recipe)}`,
    `  mutation: ${f.desc.join('; ')}`,
    `  command: ${f.argv.join(' ')}`,
    `  exit ${f.code}: ${f.err.split('\n')[0]}`,
  ].join('\n')).join('\n') + (fs_.length > 15 ? `\n… and ${fs_.length - 15} more` : '');
}

/**
 * Runs one family as a test: every case must meet the contract; a failure names the seed
 * that replays it. `cases` and `seed` are the unscaled count and the default run seed.
 */
export async function expectSuiteClean(opts: Omit<SuiteOptions, 'runSeed'> & { seed: number }): Promise<void> {
  const { seed, ...rest } = opts;
  const cases = scaled(opts.cases);
  const r = await runSuite({ ...rest, cases, runSeed: runSeedFromEnv(seed) });
  console.log(summary(r));
  expect(r.failures, `LR_FUZZ_SEED=${r.runSeed}\n${describeFailures(r.failures)}`).toEqual([]);
  expect(r.cases).toBe(cases);
}
