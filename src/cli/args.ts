/** Command-line parsing on node:util's parseArgs, with errors as one-line usage messages. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { LrError } from '../errors.js';

export type Options = ParseArgsConfig['options'];

export interface Parsed {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

export function parse(argv: readonly string[], options: Options, command: string): Parsed {
  try {
    const r = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
    return r as Parsed;
  } catch (e) {
    throw new LrError('usage', `${parseErrorText(e as Error & { code?: string })} (see onnx-lr ${command} --help)`);
  }
}

/**
 * node's parseArgs messages in the CLI's words: its hint on positionals that start with
 * '-' (with an unbalanced quote) is no help to someone who mistyped an option.
 */
function parseErrorText(e: Error & { code?: string }): string {
  const named = /'(-[^' ]*)/.exec(e.message)?.[1];
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && named) return `unknown option ${named}`;
  if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && named) {
    return /does not take/.test(e.message) ? `${named} takes no value` : `${named} needs a value`;
  }
  return e.message.split('\n')[0].replace(/\. To specify a positional.*$/, '');
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function strs(p: Parsed, name: string): string[] {
  const v = p.values[name];
  return Array.isArray(v) ? v.map(String) : typeof v === 'string' ? [v] : [];
}

export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** A number option within [min, max]; `integer` rejects fractions. */
export function num(p: Parsed, name: string, opts: { min?: number; max?: number; integer?: boolean } = {}): number | undefined {
  const s = str(p, name);
  if (s === undefined) return undefined;
  const v = Number(s);
  const bad = s.trim() === '' || !Number.isFinite(v) || (opts.integer && !Number.isInteger(v))
    || (opts.min !== undefined && v < opts.min) || (opts.max !== undefined && v > opts.max);
  if (bad) {
    const range = opts.min !== undefined || opts.max !== undefined ? ` in [${opts.min ?? '-inf'}, ${opts.max ?? 'inf'}]` : '';
    throw new LrError('usage', `--${name} expects ${opts.integer ? 'an integer' : 'a number'}${range}, got "${s}"`);
  }
  return v;
}

export function expectPositionals(p: Parsed, n: number, command: string, names: string): string[] {
  if (p.positionals.length !== n) {
    throw new LrError('usage', `${command} expects ${names}, got ${p.positionals.length} argument(s) (see onnx-lr ${command} --help)`);
  }
  return p.positionals;
}
