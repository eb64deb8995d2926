/**
 * Timing helpers shared by the benchmarks in tools/. The machine is shared and its load
 * drifts, so two sides of a comparison are timed interleaved (ABAB…, with the order
 * swapped every other round so neither side always runs right after the other) and
 * reported as a median with its spread (min–max), never as one run.
 */
import { mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { cpuFlags, readCpuinfo } from '../src/verify/cpu-block.js';

export interface Timing {
  /** Seconds of every timed run, in run order. */
  runs: number[];
  median: number;
  min: number;
  max: number;
}

export function timing(runs: number[]): Timing {
  const s = [...runs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { runs, median, min: s[0]!, max: s[s.length - 1]! };
}

/** "12.3 s (11.9–13.0, 3 runs)": a median with its spread. */
export function describe(t: Timing, digits = 2): string {
  return t.runs.length > 1
    ? `${t.median.toFixed(digits)} (${t.min.toFixed(digits)}–${t.max.toFixed(digits)})`
    : `${t.median.toFixed(digits)} (1 run)`;
}

/** Seconds taken by one call of `fn` (awaited). */
export async function seconds<T>(fn: () => T | Promise<T>): Promise<{ s: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { s: (performance.now() - t0) / 1000, value };
}

/**
 * Runs `sides` interleaved: `repeats` rounds, each running every side once, in the
 * given order on even rounds and reversed on odd ones. Each side returns the seconds its
 * run took (so a side timed elsewhere, e.g. in another process, reports its own clock).
 * `pauseMs` before each run lets thread pools that spin after a run (ORT's, OpenBLAS's)
 * go idle before the other side starts.
 */
export async function alternate(sides: readonly (() => Promise<number>)[], repeats: number, pauseMs = 0): Promise<Timing[]> {
  const runs = sides.map(() => [] as number[]);
  for (let round = 0; round < repeats; round++) {
    const order = sides.map((_, i) => i);
    if (round % 2) order.reverse();
    for (const i of order) {
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      runs[i]!.push(await sides[i]!());
    }
  }
  return runs.map(timing);
}

/** alternate() for sides timed here: each side's timing and the value of its last run. */
export async function interleaved<T>(
  sides: readonly (() => T | Promise<T>)[], repeats: number, pauseMs = 0,
): Promise<{ timing: Timing; last: T }[]> {
  const last: T[] = new Array<T>(sides.length);
  const timings = await alternate(sides.map((fn, i) => async () => {
    const { s, value } = await seconds(fn);
    last[i] = value;
    return s;
  }), repeats, pauseMs);
  return timings.map((timing, i) => ({ timing, last: last[i]! }));
}

/**
 * A boolean flag: `--name` after `npm run X --`, or `npm run X --name` (which npm turns
 * into the config variable npm_config_name instead of passing it on).
 */
export function flag(argv: readonly string[], name: string): boolean {
  return argv.includes(`--${name}`) || process.env[`npm_config_${name.replace(/-/g, '_')}`] === 'true';
}

/** `--name=X` as a number (default when absent); exits 2 naming the option and `must` when `ok` refuses it. */
function numberOption(argv: readonly string[], name: string, dflt: number, tool: string, ok: (v: number) => boolean, must: string): number {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  if (!a) return dflt;
  const v = Number(a.slice(name.length + 3));
  if (!ok(v)) {
    process.stderr.write(`${tool}: --${name} must be ${must}, got ${a.slice(name.length + 3) || '(nothing)'}\n`);
    process.exit(2);
  }
  return v;
}

/** `--name=X` as one of `choices` (default when absent); exits 2 naming the option otherwise. */
export function stringOption<T extends string>(argv: readonly string[], name: string, dflt: T, choices: readonly T[], tool: string): T {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  if (!a) return dflt;
  const v = a.slice(name.length + 3) as T;
  if (!choices.includes(v)) {
    process.stderr.write(`${tool}: --${name} must be one of ${choices.join(', ')}, got ${v || '(nothing)'}\n`);
    process.exit(2);
  }
  return v;
}

/** `--name=N` as a positive integer (default when absent); exits 2 naming the option otherwise. */
export const intOption = (argv: readonly string[], name: string, dflt: number, tool: string): number =>
  numberOption(argv, name, dflt, tool, (v) => Number.isInteger(v) && v >= 1, 'a positive integer');

/** `--name=X` as a number in (0, 1] (default when absent); exits 2 naming the option otherwise. */
export const fractionOption = (argv: readonly string[], name: string, dflt: number, tool: string): number =>
  numberOption(argv, name, dflt, tool, (v) => v > 0 && v <= 1, 'a number in (0, 1]');

export const loadLine = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');

/**
 * What the figures depend on: CPU model and its widest SIMD (ORT's conv kernels block
 * channels by 16 with AVX-512, by 8 with AVX2), core count and ORT's version. The fits'
 * GEMMs run in ORT (MLAS) too: no BLAS library is involved.
 */
export function machineLine(): string {
  const flags = cpuFlags(readCpuinfo());
  const isa = flags.includes('avx512f') ? 'AVX-512' : flags.includes('avx2') ? 'AVX2' : 'no AVX2';
  let ort = '?';
  try { ort = (JSON.parse(readFileSync(new URL('../node_modules/onnxruntime-node/package.json', import.meta.url), 'utf8')) as { version: string }).version; } catch { /* not installed */ }
  return `${cpus()[0]?.model ?? '?'} (${isa}), ${cpus().length} cores, onnxruntime-node ${ort} (MLAS; the fits' GEMMs run in it too, no BLAS)`;
}

/**
 * Makes the cache folder `dir` by `fill` in `dir`.tmp and renames it into place, so an
 * interrupted run leaves no half folder that a later run would take for a whole one.
 */
export function makeFolder(dir: string, fill: (tmp: string) => void): void {
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  fill(tmp);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
}
