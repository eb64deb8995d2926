/**
 * `tsx tools/with-huge-pages.ts SCRIPT ARGS…`: runs a bench script (through tsx) in a
 * process started with glibc's huge pages, as the CLI runs its worker
 * (src/util/huge-pages.ts), so a bench measures what the CLI does; the processes a bench
 * starts (numpy's reference) inherit the same environment. Exits with the script's code.
 */
import { spawnSync } from 'node:child_process';
import { withHugePages } from '../src/util/huge-pages.js';

const [script, ...args] = process.argv.slice(2);
if (!script) {
  process.stderr.write('usage: tsx tools/with-huge-pages.ts SCRIPT [ARGS…]\n');
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--import', 'tsx', script, ...args], { stdio: 'inherit', env: withHugePages(process.env) });
if (r.error) {
  process.stderr.write(`cannot run ${script}: ${r.error.message}\n`);
  process.exit(2);
}
process.exit(r.status ?? 1);
