import { describe, expect, it } from 'vitest';
import { machineNchwcBlock, nchwcBlock } from '../../src/verify/cpu-block.js';

const x86 = (flags: string): string => [0, 1].map((p) => `processor\t: ${p}\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: ${flags}\nbugs\t\t: sysret_ss_attrs\n`).join('\n');

describe('NCHWc block from /proc/cpuinfo', () => {
  it('is 16 with AVX-512F, 8 on other x86-64 CPUs (AVX2 or only SSE), as ORT sets it', () => {
    expect(nchwcBlock(x86('fpu sse sse2 avx avx2 fma avx512f avx512dq avx512bw'), 'x64')).toBe(16);
    expect(nchwcBlock(x86('fpu sse sse2 avx avx2 fma'), 'x64')).toBe(8);
    expect(nchwcBlock(x86('fpu sse sse2'), 'x64')).toBe(8);
    // Flags are whole words: avx512vl alone is not AVX-512F, nor a longer word containing it.
    expect(nchwcBlock(x86('avx2 avx512vl avx512fx'), 'x64')).toBe(8);
  });

  it('is undefined off x86-64 (ORT has no blocked conv layout there)', () => {
    expect(nchwcBlock('processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve\n', 'arm64')).toBeUndefined();
    expect(nchwcBlock(x86('avx512f'), 'arm64')).toBeUndefined();
  });

  it('reads the machine (the baseline 8 on x86-64 when /proc/cpuinfo cannot be read)', () => {
    expect(machineNchwcBlock(() => x86('avx2 avx512f'), 'x64')).toBe(16);
    expect(machineNchwcBlock(() => { throw new Error('ENOENT'); }, 'x64')).toBe(8);
    expect([8, 16, undefined]).toContain(machineNchwcBlock());
  });
});
