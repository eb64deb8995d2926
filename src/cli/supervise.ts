/**
 * The command line runs its work in a child process (the worker: the same entry script,
 * marked by an environment variable) watched by the process the user started. What kills
 * a process outright — ONNX Runtime aborting on a malformed model (a C++ assertion it does
 * not report as an error), a memory bomb, the kernel's OOM killer — then ends in one
 * `onnx-lr:` line and exit 2 instead of a dead tool: no check of model contents can
 * foresee every crash, a process boundary catches them all.
 *
 * The worker's fd 2 is a pipe to the supervisor: native crash output (assertion texts,
 * V8's fatal errors) is caught there, shown only with ONNX_LR_DEBUG, and passed on as it
 * was when the worker ends normally. The tool's own messages go to fd 3, the user's stderr
 * itself (so a terminal is still a terminal for the live progress line).
 */
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tty from 'node:tty';
import { LrError } from '../errors.js';
import { removeStaleTemps, removeStaleWorkDirs } from '../util/temp-files.js';
import { MAX_MEMORY_ENV, memoryLimit, takeMaxMemory } from './max-memory.js';
import { showGiB } from '../util/memory.js';
import { withHugePages } from '../util/huge-pages.js';

/** Where the worker writes the tool's messages; the supervisor passes it its stderr there. */
export interface TextSink {
  write(s: string): unknown;
  isTTY?: boolean;
}

/** Runs a command in the worker: the CLI's main() with stderr messages going to `stderr`. */
export type Work = (argv: string[], stderr: TextSink) => Promise<number>;

/** Set (to the messages fd) in the worker's environment only; the worker removes it at once. */
const WORKER_ENV = 'ONNX_LR_WORKER';
const MESSAGES_FD = 3;
const POLL_MS = 100;
/** Native output of a worker kept for the user (the head: a crash message comes first). */
const CAPTURE_BYTES = 256 * 1024;
const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** Signals by which a process crashes on its own (assertions, bad memory access). */
const CRASHES = new Set(['SIGABRT', 'SIGSEGV', 'SIGBUS', 'SIGILL', 'SIGFPE', 'SIGTRAP', 'SIGSYS']);

// ---- terminal output ----------------------------------------------------------------

/** C0 controls but tab and newline, DEL and C1: what a terminal would act on. */
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

/**
 * Makes text safe to print: control characters become `\u00XX`. That form is also a
 * JSON string escape, so JSON output (where JSON.stringify already escaped C0 but leaves
 * DEL and C1 raw) stays valid JSON with the same values, and nothing is escaped twice.
 */
export function escapeControls(s: string): string {
  return s.replace(CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// ---- why a worker ended -------------------------------------------------------------

export interface WorkerEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The signal the supervisor received (and passed on) while the worker ran. */
  received?: NodeJS.Signals;
  /** Set when the supervisor killed the worker for passing its memory limit. */
  overLimit?: { rss: number; limit: number };
  /** What the worker's native side wrote on fd 2. */
  nativeOutput: string;
  argv: readonly string[];
}

/** What the run was about, for messages: the first argument after the command when it is not an option. */
function subject(argv: readonly string[]): string {
  const [cmd, first] = argv;
  if (first !== undefined && !first.startsWith('-')) return first;
  return cmd === undefined ? 'the command' : `'${cmd}'`;
}

const signalNumber = (s: NodeJS.Signals): number => os.constants.signals[s] ?? 0;

/** The exit code and the one-line message (none when the worker's own exit code stands). */
export function describeEnd(end: WorkerEnd): { code: number; message?: string } {
  const what = subject(end.argv);
  if (end.overLimit && end.signal === 'SIGKILL') {
    return { code: 2, message: `ran out of memory while processing ${what}: the worker passed the ${showGiB(end.overLimit.limit)} limit (--max-memory GIB or ${MAX_MEMORY_ENV} raises it) and was stopped` };
  }
  if (end.signal === null) return { code: end.code ?? 2 };
  // Ctrl-C reaches the worker directly too: its own SIGINT is an interruption as well.
  const interrupt = end.received ?? ((FORWARDED as readonly string[]).includes(end.signal) ? end.signal : undefined);
  if (interrupt) return { code: 128 + signalNumber(interrupt), message: `interrupted (${interrupt})` };
  if (CRASHES.has(end.signal)) {
    if (/heap out of memory/i.test(end.nativeOutput)) {
      return { code: 2, message: `ran out of JavaScript heap memory while processing ${what} (${end.signal}; NODE_OPTIONS=--max-old-space-size=MIB raises Node's heap limit)` };
    }
    return { code: 2, message: `ONNX Runtime crashed (${end.signal}) while processing ${what}; the model is probably malformed (ONNX_LR_DEBUG=1 shows the crash output)` };
  }
  if (end.signal === 'SIGKILL') {
    return { code: 2, message: `the worker was killed (SIGKILL) while processing ${what}: most likely the system ran out of memory (a lower --max-memory stops it cleanly first)` };
  }
  return { code: 2, message: `the worker died of ${end.signal} while processing ${what}` };
}

// ---- supervisor ---------------------------------------------------------------------

/** Resident memory of a process, from /proc (Linux); undefined where unknown. */
function residentBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Temp files a killed worker left beside the files it was writing (optimize/convert OUT, --report), and its working folder. */
function removeWorkerTemps(argv: readonly string[], pid: number | undefined): void {
  const [cmd, ...rest] = argv;
  if (cmd !== 'optimize' && cmd !== 'convert') return;
  const dirs = new Set<string>();
  for (const a of rest) {
    const p = a.startsWith('--report=') ? a.slice('--report='.length) : a;
    if (p !== '' && !p.startsWith('-')) dirs.add(path.dirname(path.resolve(p)));
  }
  // Only temps of processes no longer running go: the worker is gone, other runs are not touched.
  for (const d of dirs) removeStaleTemps(d);
  // And its working copy in the temp folder (optimize --compute float32): the worker's only.
  if (pid !== undefined) removeStaleWorkDirs(os.tmpdir(), pid);
}

function supervise(argv: readonly string[], limit: number, entry: string): Promise<number> {
  const commandArgv = takeMaxMemory(argv).argv; // already checked by memoryLimit
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = fork(entry, [...argv], {
        execArgv: process.execArgv,
        // Huge pages for the worker's large allocations: fresh memory is much of a run's time where page faults are dear (util/huge-pages.ts).
        env: { ...withHugePages(process.env), [WORKER_ENV]: String(MESSAGES_FD) },
        // fd 2: caught native output; fd 3: the user's stderr, for the tool's messages.
        stdio: ['inherit', 'inherit', 'pipe', 2, 'ipc'],
      });
    } catch (e) {
      process.stderr.write(`onnx-lr: cannot start the worker process: ${escapeControls((e as Error).message)}\n`);
      resolve(2);
      return;
    }
    const chunks: Buffer[] = [];
    let captured = 0;
    let dropped = 0;
    child.stderr!.on('data', (b: Buffer) => {
      const keep = b.subarray(0, Math.max(0, CAPTURE_BYTES - captured));
      if (keep.length > 0) chunks.push(keep);
      captured += keep.length;
      dropped += b.length - keep.length;
    });

    let received: NodeJS.Signals | undefined;
    let overLimit: WorkerEnd['overLimit'];
    // On a terminal, Ctrl-C reaches the worker too; passing it on is harmless. A second
    // one stops a worker stuck in native code that does not get to its handler.
    const forward = (sig: NodeJS.Signals): void => {
      child.kill(received ? 'SIGKILL' : sig);
      received ??= sig;
    };
    for (const s of FORWARDED) process.on(s, forward);
    const poll = setInterval(() => {
      const rss = child.pid === undefined ? undefined : residentBytes(child.pid);
      if (rss !== undefined && rss > limit && !overLimit) {
        overLimit = { rss, limit };
        child.kill('SIGKILL');
      }
    }, POLL_MS);

    let settled = false;
    const finish = (code: number, message?: string): void => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      for (const s of FORWARDED) process.off(s, forward);
      if (message) process.stderr.write(`onnx-lr: ${escapeControls(message)}\n`);
      resolve(code);
    };
    child.on('error', (e) => {
      // Spawning failed (or killing did): the worker never ran, or is gone.
      if (child.pid === undefined) finish(2, `cannot start the worker process: ${e.message}`);
    });
    child.on('close', (code, signal) => {
      const nativeOutput = Buffer.concat(chunks).toString('utf8') + (dropped > 0 ? `\n[${dropped} more bytes not shown]\n` : '');
      const end = describeEnd({ code, signal, received, overLimit, nativeOutput, argv: commandArgv });
      if (nativeOutput !== '' && (end.message === undefined || process.env.ONNX_LR_DEBUG)) {
        // ORT colours its log lines: drop the colours, escape anything else.
        process.stderr.write(escapeControls(nativeOutput.replace(/\x1b\[[0-9;]*m/g, '')));
      }
      if (signal !== null) removeWorkerTemps(commandArgv, child.pid);
      finish(end.code, end.message);
    });
  });
}

// ---- worker -------------------------------------------------------------------------

/** Blocking writes to an inherited fd (retried while a non-blocking pipe is full). */
function fdSink(fd: number): TextSink {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  return {
    isTTY: tty.isatty(fd),
    write(s: string) {
      const b = Buffer.from(s, 'utf8');
      for (let done = 0; done < b.length;) {
        try {
          done += fs.writeSync(fd, b, done, b.length - done);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') return true; // stderr is gone: nowhere to report it
          Atomics.wait(pause, 0, 0, 1);
        }
      }
      return true;
    },
  };
}

async function runWorker(argv: readonly string[], work: Work): Promise<number> {
  const fd = Number(process.env[WORKER_ENV]);
  delete process.env[WORKER_ENV]; // not for anything this process starts
  process.channel?.unref();
  // The channel closes when the supervisor is gone (even by SIGKILL): stop rather than
  // run on unwatched. SIGTERM lets the temp-file cleanup run.
  process.on('disconnect', () => { process.kill(process.pid, 'SIGTERM'); });
  const stderr: TextSink = Number.isInteger(fd) && fd > 2 ? fdSink(fd) : process.stderr;
  try {
    return await work([...argv], stderr);
  } catch (e) {
    stderr.write(`onnx-lr: internal error: ${escapeControls((e as Error)?.message ?? String(e))}\n`);
    return 2;
  }
}

/**
 * The command line's entry: in the process the user started, runs `argv` in a supervised
 * worker (this same script, `process.argv[1]`) and returns the exit code; in the worker,
 * runs `work`. A usage error in --max-memory is reported here (exit 2).
 */
export async function runSupervised(argv: readonly string[], work: Work): Promise<number> {
  if (process.env[WORKER_ENV] !== undefined && typeof process.send === 'function') return runWorker(argv, work);
  let limit: number;
  try {
    limit = memoryLimit(argv, process.env);
  } catch (e) {
    if (!(e instanceof LrError)) throw e;
    process.stderr.write(`onnx-lr: ${escapeControls(e.message)}\n`);
    return 2;
  }
  return supervise(argv, limit, process.argv[1]!);
}
