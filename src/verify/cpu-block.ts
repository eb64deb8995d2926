/**
 * The channel block of ORT's blocked conv layout (NCHWc) on this CPU. ORT's MLAS sets
 * NchwcBlockSize to 8 on every x86-64 CPU (SSE and AVX/AVX2 kernels) and to 16 when
 * AVX-512F is there (platform.cpp); elsewhere (Arm, wasm) there is no NCHWc layout.
 * ORT's NCHWc transformer keeps a conv in the blocked layout only when its input channels
 * are a multiple of the block (or fewer than it), so ranks on that grid run faster.
 */
import { readFileSync } from 'node:fs';

/** The NCHWc block for a CPU described by /proc/cpuinfo's text on `arch`; undefined when ORT has none. */
export function nchwcBlock(cpuinfo: string, arch: string = process.arch): number | undefined {
  if (arch !== 'x64') return undefined;
  // x86 lists its features on "flags" lines (one per logical CPU; they agree).
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.trim().split(/\s+/) ?? [];
  return flags.includes('avx512f') ? 16 : 8;
}

/** The block of the machine this runs on (x86-64 without a readable /proc/cpuinfo: 8, the baseline). */
export function machineNchwcBlock(read: () => string = () => readFileSync('/proc/cpuinfo', 'utf8'), arch: string = process.arch): number | undefined {
  let text = '';
  try { text = read(); } catch { /* not Linux, or no /proc: the baseline block */ }
  return nchwcBlock(text, arch);
}
