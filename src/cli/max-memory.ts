/**
 * The worker's memory limit: `--max-memory GIB` (any command, taken out of argv before the
 * command sees it), else $ONNX_LR_MAX_MEMORY, else a share of the machine's memory.
 */
import { LrError } from '../errors.js';
import { availableMemory } from '../util/memory.js';

export const MAX_MEMORY_ENV = 'ONNX_LR_MAX_MEMORY';
/** Share of the machine's memory (or of the cgroup's limit) the worker may use by default. */
const DEFAULT_MEMORY_SHARE = 0.85;
const GIB = 2 ** 30;

function gib(text: string, what: string): number {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v <= 0) {
    throw new LrError('usage', `${what} expects a size in GiB greater than 0 (e.g. 8 or 0.5), got "${text}"`);
  }
  return v;
}

/**
 * Takes `--max-memory GIB` (or `--max-memory=GIB`) out of argv, wherever it stands before
 * `--`: every command accepts it, and it concerns the supervisor, not the command.
 * Throws a usage LrError for a missing or bad value.
 */
export function takeMaxMemory(argv: readonly string[]): { argv: string[]; gib?: number } {
  const rest: string[] = [];
  let value: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') { rest.push(...argv.slice(i)); break; }
    if (a === '--max-memory') {
      const v = argv[i + 1];
      if (v === undefined || v.startsWith('--')) throw new LrError('usage', '--max-memory expects a size in GiB (e.g. --max-memory 8)');
      value = gib(v, '--max-memory');
      i++;
    } else if (a.startsWith('--max-memory=')) {
      value = gib(a.slice('--max-memory='.length), '--max-memory');
    } else {
      rest.push(a);
    }
  }
  return value === undefined ? { argv: rest } : { argv: rest, gib: value };
}

/** The worker's memory limit in bytes: --max-memory, else $ONNX_LR_MAX_MEMORY, else 85% of memory. */
export function memoryLimit(argv: readonly string[], env: NodeJS.ProcessEnv): number {
  const fromArgs = takeMaxMemory(argv).gib;
  const fromEnv = env[MAX_MEMORY_ENV] !== undefined && env[MAX_MEMORY_ENV] !== '' ? gib(env[MAX_MEMORY_ENV]!, MAX_MEMORY_ENV) : undefined;
  const g = fromArgs ?? fromEnv;
  return g !== undefined ? g * GIB : Math.floor(availableMemory() * DEFAULT_MEMORY_SHARE);
}

