/**
 * util/huge-pages.ts: the tunable is added to GLIBC_TUNABLES without losing what is there,
 * and glibc honours it (a process started with it backs a large array with huge pages).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { withHugePages } from '../../src/util/huge-pages.js';

/** The kernel's THP mode ('always', 'madvise', 'never'); undefined where not Linux or unknown. */
function thpMode(): string | undefined {
  try {
    return /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/** AnonHugePages (bytes) of a node process that filled a fresh 64 MiB array, started with `env`. */
function hugeBytesAfterFill(env: NodeJS.ProcessEnv): number {
  const script = `const a = new Float32Array(16 * 2 ** 20); a.fill(1);
const m = /AnonHugePages:\\s+(\\d+) kB/.exec(require('node:fs').readFileSync('/proc/self/smaps_rollup', 'utf8'));
process.stdout.write(String(m ? Number(m[1]) * 1024 : -1));`;
  const r = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return Number(r.stdout);
}

describe('withHugePages', () => {
  it('adds glibc.malloc.hugetlb=1, keeps the other tunables and a setting of its own, copies the environment', () => {
    const env = { PATH: '/bin', GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' };
    expect(withHugePages(env)).toEqual({ PATH: '/bin', GLIBC_TUNABLES: 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1' });
    expect(env.GLIBC_TUNABLES).toBe('glibc.malloc.arena_max=2');
    expect(withHugePages({ PATH: '/bin' }).GLIBC_TUNABLES).toBe('glibc.malloc.hugetlb=1');
    expect(withHugePages({ GLIBC_TUNABLES: '' }).GLIBC_TUNABLES).toBe('glibc.malloc.hugetlb=1');
    expect(withHugePages({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }).GLIBC_TUNABLES).toBe('glibc.malloc.hugetlb=0');
    expect(withHugePages({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=2:glibc.malloc.tcache_count=0' }).GLIBC_TUNABLES).toBe('glibc.malloc.hugetlb=2:glibc.malloc.tcache_count=0');
  });

  // Needs Linux with THP on request (madvise) and glibc: the mode where the tunable decides.
  const mode = thpMode();
  it.skipIf(mode !== 'madvise' || !fs.existsSync('/proc/self/smaps_rollup'))(`glibc backs a large array with huge pages only with it (THP mode here: ${mode ?? 'unknown'})`, () => {
    const { GLIBC_TUNABLES: _, ...base } = process.env;
    expect(hugeBytesAfterFill(withHugePages(base))).toBeGreaterThanOrEqual(32 * 2 ** 20);
    expect(hugeBytesAfterFill({ ...base, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' })).toBeLessThan(32 * 2 ** 20);
  });
});
