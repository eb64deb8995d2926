/** Runs the CLI in-process and captures what it prints (one line per call of out/err). */
import { main } from '../../src/cli/main.js';
import { isProgressLine } from '../../src/cli/progress.js';

export interface CliRun { code: number; out: string; err: string }

export async function runCli(...argv: string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => { out += `${s}\n`; }, err: (s) => { err += `${s}\n`; } });
  return { code, out, err };
}

/**
 * The stderr lines that are not progress lines. A run that takes longer than the progress
 * interval (10 s, easily passed on a loaded machine) logs where it is; what a test checks
 * is that nothing else (a warning, an error) was printed.
 */
export function nonProgress(err: string): string[] {
  if (err === '') return [];
  return err.replace(/\n$/, '').split('\n').filter((l) => !isProgressLine(l));
}
