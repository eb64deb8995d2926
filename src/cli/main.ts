#!/usr/bin/env node
/**
 * The only place that writes user-facing messages and chooses exit codes:
 * 0 success, 1 verification failed (OUT still written), 2 bad input or usage.
 */
import { LrError } from '../errors.js';
import { convert, CONVERT_HELP } from './convert.js';
import { inspect, INSPECT_HELP } from './inspect.js';
import { optimize, OPTIMIZE_HELP, plan, PLAN_HELP } from './optimize.js';
import { escaping, stdio, type Io } from './io.js';
import { MAX_MEMORY_ENV, memoryLimit, takeMaxMemory } from './max-memory.js';
import { TOOL_NAME, TOOL_VERSION } from '../report/version.js';

export { stdio, type Io };

export const MAIN_HELP = `onnx-lr — low-rank decomposition of ONNX models, verified in ONNX Runtime

Usage:
  onnx-lr inspect MODEL [--shape NAME:DIMS ...] [--json]
  onnx-lr optimize IN OUT [options]      rewrite decomposable layers, verify, report
  onnx-lr plan IN [options] > plan.json  the per-layer decisions, without writing a model
  onnx-lr convert IN OUT [--external-data [--threshold BYTES]] [--compute float32] [--narrow-reorder]

Every command also takes --max-memory GIB: the work runs in a child process that is
stopped with a clear error past that much memory (default: 85% of the machine's, or
$${MAX_MEMORY_ENV}); a crash of ONNX Runtime on a malformed model is reported the same
way (exit 2). With glibc (Linux) that process starts with huge pages for large
allocations (glibc.malloc.hugetlb=1 added to $GLIBC_TUNABLES; a value of your own is kept,
0 turns it off): touching fresh memory is much of a long run where page faults are dear.

Run 'onnx-lr COMMAND --help' for a command's options.`;

const HELPS: Record<string, string> = { inspect: INSPECT_HELP, optimize: OPTIMIZE_HELP, plan: PLAN_HELP, convert: CONVERT_HELP };

export async function main(argv: readonly string[], rawIo: Io = stdio()): Promise<number> {
  const io = escaping(rawIo);
  try {
    // The supervisor (supervise.ts) applies --max-memory; every command accepts it.
    const [cmd, ...rest] = takeMaxMemory(argv).argv;
    switch (cmd) {
      case undefined: case '-h': case '--help': case 'help':
        io.out(rest[0] && HELPS[rest[0]] ? HELPS[rest[0]] : MAIN_HELP);
        return cmd === undefined ? 2 : 0;
      case '--version': case '-V':
        io.out(`${TOOL_NAME} ${TOOL_VERSION}`);
        return 0;
      case 'inspect': return await inspect(rest, io.out);
      case 'convert': return await convert(rest, io.out);
      // The limit the supervisor holds the worker to: --refine sizes its state by it.
      case 'optimize': return await optimize(rest, io, memoryLimit(argv, process.env));
      case 'plan': return await plan(rest, io, memoryLimit(argv, process.env));
      default:
        io.err(`onnx-lr: unknown command "${cmd}" (commands: inspect, optimize, plan, convert; see onnx-lr --help)`);
        return 2;
    }
  } catch (e) {
    if (process.env.ONNX_LR_DEBUG) io.err((e as Error).stack ?? String(e));
    const msg = e instanceof LrError ? e.message : `internal error: ${(e as Error)?.message ?? String(e)}`;
    io.err(`onnx-lr: ${msg.split('\n')[0]}`);
    return 2;
  }
}
