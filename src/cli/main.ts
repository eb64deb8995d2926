#!/usr/bin/env node
/**
 * The only place that writes user-facing messages and chooses exit codes:
 * 0 success, 1 verification failed (OUT still written), 2 bad input or usage.
 */
import { LrError } from '../errors.js';
import { convert, CONVERT_HELP } from './convert.js';
import { inspect, INSPECT_HELP } from './inspect.js';
import { optimize, OPTIMIZE_HELP, plan, PLAN_HELP } from './optimize.js';

export const MAIN_HELP = `onnx-lr — low-rank decomposition of ONNX models, verified in ONNX Runtime

Usage:
  onnx-lr inspect MODEL [--shape NAME:DIMS ...] [--json]
  onnx-lr optimize IN OUT [options]      rewrite decomposable layers, verify, report
  onnx-lr plan IN [options] > plan.json  the per-layer decisions, without writing a model
  onnx-lr convert IN OUT [--external-data [--threshold BYTES]]

Run 'onnx-lr COMMAND --help' for a command's options.`;

const HELPS: Record<string, string> = { inspect: INSPECT_HELP, optimize: OPTIMIZE_HELP, plan: PLAN_HELP, convert: CONVERT_HELP };

export interface Io {
  out(s: string): void;
  err(s: string): void;
  /** Raw writes for a live progress line; set only when stderr is a terminal. */
  live?(s: string): void;
}

const STDIO: Io = {
  out: (s) => { process.stdout.write(`${s}\n`); },
  err: (s) => { process.stderr.write(`${s}\n`); },
  ...(process.stderr.isTTY === true && { live: (s: string) => { process.stderr.write(s); } }),
};

export async function main(argv: readonly string[], io: Io = STDIO): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined: case '-h': case '--help': case 'help':
        io.out(rest[0] && HELPS[rest[0]] ? HELPS[rest[0]] : MAIN_HELP);
        return cmd === undefined ? 2 : 0;
      case '--version': case '-V':
        io.out('onnx-lr 0.1.0');
        return 0;
      case 'inspect': return await inspect(rest, io.out);
      case 'convert': return convert(rest, io.out);
      case 'optimize': return await optimize(rest, io);
      case 'plan': return await plan(rest, io);
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
