/**
 * Child process for the fuzz suite (started with `node --import tsx`): runs one CLI command
 * in-process through `main()` per message and reports exit code, stdout, stderr, time and
 * peak RSS, plus whether our loader and ONNX Runtime accept the files involved. Running in
 * a child lets the parent enforce a real per-case time limit (kill and restart) and
 * survive a native crash.
 */
import * as fs from 'node:fs';
import * as ort from 'onnxruntime-node';
import { main } from '../../src/cli/main.js';
import { loadModel } from '../../src/onnx/file.js';

export interface Job {
  id: number;
  argv: string[];
  /** OUT of convert/optimize: checked with our loader and ORT when it exists after the run. */
  out?: string;
  /** IN: loaded in ORT (once per path) when the verdict needs to know whether ORT accepts it. */
  in?: string;
}

export interface JobResult {
  id: number;
  code: number;
  out: string;
  err: string;
  ms: number;
  /** Peak RSS during the command (VmHWM after a reset), in MB; -1 when unknown. */
  peakMb: number;
  /** main() threw instead of returning a code. */
  threw?: string;
  outExists?: boolean;
  /** Our loader on OUT: '' when it loads, else the error. */
  outLoad?: string;
  /** ORT on IN / OUT: '' when it loads, else the first line of its error (OUT is asked only when IN loads). */
  outOrt?: string;
  inOrt?: string;
}

const resetPeak = (): boolean => {
  try { fs.writeFileSync('/proc/self/clear_refs', '5'); return true; } catch { return false; }
};
const peakMb = (): number => {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : -1;
  } catch { return -1; }
};

async function ortLoads(file: string): Promise<string> {
  try {
    const s = await ort.InferenceSession.create(file, { logSeverityLevel: 4, graphOptimizationLevel: 'disabled', intraOpNumThreads: 1, interOpNumThreads: 1 });
    await s.release();
    return '';
  } catch (e) {
    return ((e as Error).message ?? String(e)).split('\n')[0].slice(0, 300) || 'failed';
  }
}

const inCache = new Map<string, string>();

async function runJob(job: Job): Promise<JobResult> {
  let out = '';
  let err = '';
  const canReset = resetPeak();
  const t0 = performance.now();
  let code = -1;
  let threw: string | undefined;
  try {
    code = await main(job.argv, { out: (s) => { out += `${s}\n`; }, err: (s) => { err += `${s}\n`; } });
  } catch (e) {
    threw = (e as Error)?.stack ?? String(e);
  }
  const ms = performance.now() - t0;
  const res: JobResult = { id: job.id, code, out: out.slice(0, 4000), err: err.slice(0, 4000), ms, peakMb: canReset ? peakMb() : -1, threw };
  const outExists = job.out ? fs.existsSync(job.out) : false;
  if (job.in && outExists) {
    let v = inCache.get(job.in);
    if (v === undefined) {
      // Only ask ORT about files our loader accepts (a FIFO would block ORT's open forever).
      try { loadModel(job.in).external.close(); v = await ortLoads(job.in); } catch (e) { v = `our loader: ${(e as Error).message}`; }
      inCache.set(job.in, v);
    }
    res.inOrt = v;
  }
  if (job.out) {
    res.outExists = outExists;
    if (outExists) {
      try { const m = loadModel(job.out); m.external.close(); res.outLoad = ''; } catch (e) { res.outLoad = (e as Error).message; }
      // Whether ORT loads OUT matters only when it loads IN (see harness.ts judge).
      if (res.inOrt === '') res.outOrt = await ortLoads(job.out);
    }
  }
  return res;
}

process.on('message', (msg: Job | 'exit') => {
  if (msg === 'exit') process.exit(0);
  runJob(msg).then((r) => process.send!(r), (e) => process.send!({ id: msg.id, code: -1, out: '', err: '', ms: 0, peakMb: -1, threw: String(e) }));
});
process.on('uncaughtException', (e) => { process.send?.({ id: -1, code: -1, out: '', err: '', ms: 0, peakMb: -1, threw: `uncaught: ${e.stack}` }); });
process.on('unhandledRejection', (e) => { process.send?.({ id: -1, code: -1, out: '', err: '', ms: 0, peakMb: -1, threw: `unhandled rejection: ${String(e)}` }); });
process.send!({ ready: true });
