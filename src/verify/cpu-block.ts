/**
 * The channel block of ORT's blocked conv layout (NCHWc) on this CPU. ORT's MLAS sets
 * NchwcBlockSize to 8 on every x86-64 CPU (SSE and AVX/AVX2 kernels) and to 16 when
 * AVX-512F is there (platform.cpp); elsewhere (Arm, wasm) there is no NCHWc layout.
 * ORT's NCHWc transformer keeps a conv in the blocked layout only when its input channels
 * are a multiple of the block (or fewer than it), so ranks on that grid run faster.
 */
import { readFileSync } from 'node:fs';

/** ORT's widest conv channel block (AVX-512): what to plan for where this CPU has none (its sites include the 8-block's). */
export const WIDEST_NCHWC_BLOCK = 16;

/** The x86 feature flags in /proc/cpuinfo's text (its "flags" lines, one per logical CPU; they agree); none elsewhere. */
export function cpuFlags(cpuinfo: string): string[] {
  return /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.trim().split(/\s+/) ?? [];
}

/** The NCHWc block for a CPU described by /proc/cpuinfo's text on `arch`; undefined when ORT has none. */
export function nchwcBlock(cpuinfo: string, arch: string = process.arch): number | undefined {
  if (arch !== 'x64') return undefined;
  return cpuFlags(cpuinfo).includes('avx512f') ? 16 : 8;
}

/** /proc/cpuinfo's text, or '' where there is none (not Linux). */
export function readCpuinfo(): string {
  try { return readFileSync('/proc/cpuinfo', 'utf8'); } catch { return ''; }
}

/** The block of the machine this runs on (x86-64 without a readable /proc/cpuinfo: 8, the baseline). */
export function machineNchwcBlock(read: () => string = readCpuinfo, arch: string = process.arch): number | undefined {
  let text = '';
  try { text = read(); } catch { /* not Linux, or no /proc: the baseline block */ }
  return nchwcBlock(text, arch);
}
