/**
 * Transparent huge pages for glibc's large allocations (GLIBC_TUNABLES
 * `glibc.malloc.hugetlb=1`: glibc advises the kernel to back its mmap'd blocks of 2 MiB and
 * more with huge pages where the kernel's THP mode is `madvise`).
 *
 * Why: the tool's large arrays and every ONNX Runtime session's arena are fresh memory, and
 * the first touch of fresh memory costs a page fault per 4 KiB page. Where faults are dear
 * (the 2-core AMD EPYC VM the benches run on: ~10 µs each) that was a large share of a run:
 * filling a fresh 170 MB array took 0.42 s, filling it again 0.006 s, and a fresh one with
 * huge pages 0.02 s. glibc reads the tunable when a process starts, so it is set in the
 * environment of the processes the tool starts (the CLI's worker); other C libraries
 * (musl, macOS, Windows) ignore it. A user's own `glibc.malloc.hugetlb` is kept
 * (`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns this off).
 */

/** The variable glibc reads its tunables from: `name=value` pairs joined by ':'. */
export const TUNABLES_ENV = 'GLIBC_TUNABLES';
const HUGETLB = 'glibc.malloc.hugetlb';

/** A GLIBC_TUNABLES value with glibc's huge-page tunable added (`given` as it is when it sets that tunable already). */
export function hugePageTunables(given: string | undefined): string {
  const pairs = (given ?? '').split(':').filter((p) => p !== '');
  return pairs.some((p) => p.split('=')[0] === HUGETLB) ? given! : [...pairs, `${HUGETLB}=1`].join(':');
}

/** `env` with glibc's huge-page tunable added to GLIBC_TUNABLES (a copy; a setting already there is kept). */
export function withHugePages(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, [TUNABLES_ENV]: hugePageTunables(env[TUNABLES_ENV]) };
}
