/**
 * Speed-ups of several rewritten files against their original, timed together in one
 * interleaved loop (src/verify/latency.ts timeSessions: every model once per round,
 * starting one further along each round) in ORT-node (1 thread) or onnxruntime-web (wasm,
 * in node), so slow drift of the machine's load falls on all of them alike. Shared by the
 * benches that compare rewrites (bench:methods, bench:weights).
 */
import { timeSessions, type LatencyOptions } from '../src/verify/latency.js';
import { createSession, type Backend, type Session } from '../src/verify/session.js';

/** The original model and the input dims its runs use. */
export interface TimedTarget { file: string; shapes: Record<string, number[]> }

/** p50 ms of the original (first) and of each file, and the rounds timed. */
export async function timeInterleaved(t: TimedTarget, files: readonly string[], backend: Backend): Promise<{ ms: number[]; runs: number }> {
  const sessions: Session[] = [];
  try {
    for (const f of [t.file, ...files]) {
      const s = await createSession({ path: f }, { backend, intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
      if (!s.ok) throw new Error(s.error.message);
      sessions.push(s.value);
    }
    // Slow models (ISNet's 512² layers, wasm) stop after a few rounds once a minute went by.
    const opts: LatencyOptions = backend === 'node'
      ? { minRuns: 20, minSeconds: 3, maxSeconds: 60, fewestRuns: 7, shapes: t.shapes }
      : { minRuns: 10, minSeconds: 3, maxSeconds: 90, fewestRuns: 5, warmupSeconds: 20, shapes: t.shapes };
    const r = await timeSessions(sessions, opts);
    if (!r.ok) throw new Error(r.error.message);
    const ms = r.value.ms.map((p) => p.p50);
    process.stderr.write(`  ${backend}: ${r.value.runs} rounds, original ${ms[0]!.toFixed(2)} ms\n`);
    return { ms, runs: r.value.runs };
  } finally {
    for (const s of sessions) await s.release();
  }
}

/** original p50 / each file's p50, all timed in one interleaved loop. */
export async function speedups(t: TimedTarget, files: readonly string[], backend: Backend): Promise<number[]> {
  const { ms } = await timeInterleaved(t, files, backend);
  return ms.slice(1).map((x) => ms[0]! / x);
}
