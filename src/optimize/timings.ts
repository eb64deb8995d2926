/** Seconds per phase of a run, for the report (and the bench's phase table). */
import type { Report, TimingPhase } from '../report/report.js';

export type Timings = NonNullable<Report['timings']>;

/** Runs `fn` and adds the seconds it took to `t[phase]` (a phase may run more than once, e.g. per stage). */
export async function timed<T>(t: Timings, phase: TimingPhase, fn: () => T | Promise<T>): Promise<T> {
  const start = performance.now();
  try {
    return await fn();
  } finally {
    t[phase] = (t[phase] ?? 0) + (performance.now() - start) / 1000;
  }
}
