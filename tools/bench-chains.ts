/**
 * npm run bench:chains [-- --shapes=64x56,128x28,256x14] [-- --fractions=0.25,0.5] [-- --threads=1]
 *
 * Micro-bench of each conv chain against the dense 3x3 conv it replaces (issue 19's
 * "realised speed-up per MAC cut"): for C channels in and out at H=W, Tucker-2 at ranks
 * (ρC, ρC), and CP, CP-4, spatial SVD and Tensor-Train at the largest rank whose params
 * do not exceed Tucker-2's. All models of one shape are timed in one interleaved loop
 * (timeSessions: each round runs every model once, starting one further along), in
 * ORT-node at graph optimization 'all' as the latency screen times layers; medians.
 * Weights are random: ORT's CPU kernels cost the same whatever the values.
 *
 * Columns per chain: ms (median), speed-up over dense, MACs cut (dense MACs / chain MACs)
 * and realised = speed-up / MACs cut (1.0: the chain is as fast as its MACs promise).
 *
 * Two more tables: grouped 3x3 convs (groups 2 and 4) against their grouped Tucker-2,
 * CP-per-group and spatial SVD chains (as conv-tucker2, conv-cp and conv-spatial-svd write
 * them: every conv of the chain takes the group count, CP's depthwise conv runs on g·R
 * channels), and stride-2 ConvTransposes (3x3 with output_padding, 4x4) against the
 * Tucker-2 chain 1x1 → ConvTranspose core → 1x1 (convtranspose-tucker2.ts). `--no-extra`
 * skips them.
 */
import { cpus } from 'node:os';
import { readFileSync } from 'node:fs';
import { ModelBuilder } from '../models/builder.js';
import { encodeModel } from '../src/onnx/codec.js';
import { table } from '../src/report/format.js';
import { timeSessions } from '../src/verify/latency.js';
import { createSession, type Session } from '../src/verify/session.js';
import { createRng } from '../src/util/rng.js';
import { intOption, loadLine } from './bench-util.js';

const TOOL = 'bench:chains';
const argv = process.argv.slice(2);
const listOption = (name: string, dflt: string): string => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt;
const shapes = listOption('shapes', '64x56,128x28,256x14,128x56,256x28').split(',').map((s) => s.split('x').map(Number) as [number, number]);
const fractions = listOption('fractions', '0.25,0.5').split(',').map(Number);
const threads = intOption(argv, 'threads', 1, TOOL);
for (const [c, hw] of shapes) {
  if (!Number.isInteger(c) || !Number.isInteger(hw) || c < 1 || hw < 1) { process.stderr.write(`${TOOL}: --shapes takes CxHW,… (e.g. 64x56), got ${listOption('shapes', '')}\n`); process.exit(2); }
}
if (fractions.some((f) => !(f > 0 && f <= 1))) { process.stderr.write(`${TOOL}: --fractions takes numbers in (0, 1], got ${listOption('fractions', '')}\n`); process.exit(2); }

/** One conv of a chain: output channels, kernel, group and pads (begin…, end…). */
interface Step { out: number; k: [number, number]; group?: number; pads: number[] }

const P0 = [0, 0, 0, 0];
const SAME3 = [1, 1, 1, 1];
const CHAINS: { name: string; steps: (c: number, r: number) => Step[] }[] = [
  { name: 'tucker2', steps: (c, r) => [{ out: r, k: [1, 1], pads: P0 }, { out: r, k: [3, 3], pads: SAME3 }, { out: c, k: [1, 1], pads: P0 }] },
  { name: 'cp', steps: (c, r) => [{ out: r, k: [1, 1], pads: P0 }, { out: r, k: [3, 3], group: r, pads: SAME3 }, { out: c, k: [1, 1], pads: P0 }] },
  { name: 'cp4', steps: (c, r) => [{ out: r, k: [1, 1], pads: P0 }, { out: r, k: [3, 1], group: r, pads: [1, 0, 1, 0] }, { out: r, k: [1, 3], group: r, pads: [0, 1, 0, 1] }, { out: c, k: [1, 1], pads: P0 }] },
  { name: 'spatial-svd', steps: (c, r) => [{ out: r, k: [3, 1], pads: [1, 0, 1, 0] }, { out: c, k: [1, 3], pads: [0, 1, 0, 1] }] },
  { name: 'tt', steps: (c, r) => [{ out: r, k: [1, 1], pads: P0 }, { out: r, k: [3, 1], pads: [1, 0, 1, 0] }, { out: r, k: [1, 3], pads: [0, 1, 0, 1] }, { out: c, k: [1, 1], pads: P0 }] },
];
const dense = (c: number): Step[] => [{ out: c, k: [3, 3], pads: SAME3 }];

/** Params of a chain (per output position, each step's MACs are its params: stride 1, same size). */
function params(c: number, steps: readonly Step[]): number {
  let cin = c;
  let p = 0;
  for (const s of steps) { p += s.out * (cin / (s.group ?? 1)) * s.k[0] * s.k[1]; cin = s.out; }
  return p;
}

/** The largest rank r (≤ the dense conv's generic bound) whose chain has at most `limit` params. */
function largestRank(c: number, limit: number, steps: (c: number, r: number) => Step[]): number {
  let r = 1;
  while (r < 9 * c && params(c, steps(c, r + 1)) <= limit) r++;
  return r;
}

const rng = createRng(0);
function chainModel(c: number, hw: number, steps: readonly Step[]): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  let x = b.input('x', [1, c, hw, hw]);
  let cin = c;
  steps.forEach((s, i) => {
    const g = s.group ?? 1;
    const n = s.out * (cin / g) * s.k[0] * s.k[1];
    const w = b.init(`w${i}`, [s.out, cin / g, ...s.k], Float32Array.from({ length: n }, () => rng.normal() * 0.1));
    x = b.node('Conv', [x, w], { kernel_shape: s.k, pads: s.pads, ...(g !== 1 && { group: g }) }, { name: `c${i}` });
    cin = s.out;
  });
  b.output(x);
  return encodeModel(b.build());
}

const cpuFlags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1]?.split(/\s+/) ?? [];
const isa = cpuFlags.includes('avx512f') ? 'AVX-512' : cpuFlags.includes('avx2') ? 'AVX2' : 'no AVX2';
console.log(`machine: ${cpus()[0]?.model ?? '?'} (${isa}), ${cpus().length} cores; ORT-node ${threads} thread(s); load before: ${loadLine()}`);

const rows: string[][] = [];
for (const [c, hw] of shapes) {
  for (const frac of fractions) {
    const r = Math.max(1, Math.round(c * frac));
    const limit = params(c, CHAINS[0]!.steps(c, r));
    const picked = CHAINS.map((ch, i) => ({ name: ch.name, rank: i === 0 ? r : largestRank(c, limit, ch.steps), steps: ch.steps }));
    const models = [dense(c), ...picked.map((p) => p.steps(c, p.rank))];
    const sessions: Session[] = [];
    for (const steps of models) {
      const s = await createSession({ bytes: chainModel(c, hw, steps) }, { intraOpNumThreads: threads, graphOptimizationLevel: 'all' });
      if (!s.ok) throw new Error(s.error.message);
      sessions.push(s.value);
    }
    const t = await timeSessions(sessions, { minRuns: 30, minSeconds: 3, warmup: 5 });
    for (const s of sessions) await s.release();
    if (!t.ok) throw new Error(t.error.message);
    const ms = t.value.ms.map((p) => p.p50);
    const denseMacs = params(c, dense(c));
    rows.push([`${c}→${c} 3x3 @${hw}²`, `${frac}`, ms[0]!.toFixed(3), String(t.value.runs),
      ...picked.map((p, i) => {
        const cut = denseMacs / params(c, models[i + 1]!);
        const speedup = ms[0]! / ms[i + 1]!;
        return `${p.rank}: ${ms[i + 1]!.toFixed(3)} ms ${speedup.toFixed(2)}x/${cut.toFixed(1)}x=${(speedup / cut).toFixed(2)}`;
      })]);
    process.stderr.write(`done ${c}x${hw} ρ=${frac}\n`);
  }
}
console.log('each chain: rank: median ms, speed-up over dense / MACs cut = realised fraction (params ≤ Tucker-2 at ranks ρC, ρC)');
console.log(table(['conv', 'ρ', 'dense ms', 'rounds', ...CHAINS.map((c) => c.name)], rows, ['l', 'r', 'r', 'r', ...CHAINS.map(() => 'l' as const)]));

/** Times the models of one row in one interleaved loop: medians, rounds. */
async function timeRow(models: readonly Uint8Array[]): Promise<{ ms: number[]; runs: number }> {
  const sessions: Session[] = [];
  for (const bytes of models) {
    const s = await createSession({ bytes }, { intraOpNumThreads: threads, graphOptimizationLevel: 'all' });
    if (!s.ok) throw new Error(s.error.message);
    sessions.push(s.value);
  }
  const t = await timeSessions(sessions, { minRuns: 30, minSeconds: 3, warmup: 5 });
  for (const s of sessions) await s.release();
  if (!t.ok) throw new Error(t.error.message);
  return { ms: t.value.ms.map((p) => p.p50), runs: t.value.runs };
}

const cell = (rank: string, ms: number, denseMs: number, cut: number): string => {
  const speedup = denseMs / ms;
  return `${rank}: ${ms.toFixed(3)} ms ${speedup.toFixed(2)}x/${cut.toFixed(1)}x=${(speedup / cut).toFixed(2)}`;
};

if (!argv.includes('--no-extra')) {
  // Grouped convs: each chain at the largest rank per group whose params do not exceed grouped Tucker-2's at (ρ·C/g, ρ·C/g).
  const GROUPED: { name: string; steps: (c: number, g: number, r: number) => Step[] }[] = [
    { name: 'tucker2', steps: (c, g, r) => [{ out: g * r, k: [1, 1], group: g, pads: P0 }, { out: g * r, k: [3, 3], group: g, pads: SAME3 }, { out: c, k: [1, 1], group: g, pads: P0 }] },
    { name: 'cp (per group)', steps: (c, g, r) => [{ out: g * r, k: [1, 1], group: g, pads: P0 }, { out: g * r, k: [3, 3], group: g * r, pads: SAME3 }, { out: c, k: [1, 1], group: g, pads: P0 }] },
    { name: 'spatial-svd', steps: (c, g, r) => [{ out: g * r, k: [3, 1], group: g, pads: [1, 0, 1, 0] }, { out: c, k: [1, 3], group: g, pads: [0, 1, 0, 1] }] },
  ];
  const grows: string[][] = [];
  for (const [c, hw, g] of [[128, 28, 2], [128, 28, 4], [256, 14, 2], [256, 14, 4]] as const) {
    const r = Math.max(1, Math.round((c / g) * 0.25));
    const limit = params(c, GROUPED[0]!.steps(c, g, r));
    const picked = GROUPED.map((ch, i) => {
      let k = r;
      if (i > 0) { k = 1; while (k < 9 * c && params(c, ch.steps(c, g, k + 1)) <= limit) k++; }
      return { rank: k, steps: ch.steps(c, g, k) };
    });
    const denseSteps: Step[] = [{ out: c, k: [3, 3], group: g, pads: SAME3 }];
    const { ms, runs } = await timeRow([chainModel(c, hw, denseSteps), ...picked.map((p) => chainModel(c, hw, p.steps))]);
    const denseMacs = params(c, denseSteps);
    grows.push([`${c}→${c} 3x3 g${g} @${hw}²`, ms[0]!.toFixed(3), String(runs), ...picked.map((p, i) => cell(`${p.rank}/group`, ms[i + 1]!, ms[0]!, denseMacs / params(c, p.steps)))]);
    process.stderr.write(`done grouped ${c}x${hw} g${g}\n`);
  }
  console.log('\ngrouped 3x3 convs: each chain at rank per group: median ms, speed-up / MACs cut = realised (params ≤ grouped Tucker-2 at 0.25·C/g)');
  console.log(table(['conv', 'dense ms', 'rounds', ...GROUPED.map((c) => c.name)], grows, ['l', 'r', 'r', ...GROUPED.map(() => 'l' as const)]));

  // Stride-2 ConvTranspose c→c on an hw² input against 1x1 (c→r) → ConvTranspose core (r→r) → 1x1 (r→c) at the output.
  const trows: string[][] = [];
  const convT = (c: number, hw: number, k: number, r?: number): Uint8Array => {
    const b = new ModelBuilder({ opset: 13 });
    let x = b.input('x', [1, c, hw, hw]);
    const attrs = { kernel_shape: [k, k], strides: [2, 2], pads: [1, 1, 1, 1], ...(k === 3 && { output_padding: [1, 1] }) };
    const w = (name: string, dims: number[]) => b.init(name, dims, Float32Array.from({ length: dims.reduce((p, q) => p * q, 1) }, () => rng.normal() * 0.1));
    if (r === undefined) {
      x = b.node('ConvTranspose', [x, w('w', [c, c, k, k])], attrs, { name: 'ct' });
    } else {
      x = b.node('Conv', [x, w('w0', [r, c, 1, 1])], {}, { name: 'a' });
      x = b.node('ConvTranspose', [x, w('w1', [r, r, k, k])], attrs, { name: 'core' });
      x = b.node('Conv', [x, w('w2', [c, r, 1, 1])], {}, { name: 'c' });
    }
    b.output(x);
    return encodeModel(b.build());
  };
  for (const [c, hw, k] of [[64, 28, 3], [64, 28, 4], [128, 14, 4], [256, 14, 4]] as const) {
    const ranks = [0.25, 0.5].map((f) => Math.max(1, Math.round(c * f)));
    const { ms, runs } = await timeRow([convT(c, hw, k), ...ranks.map((r) => convT(c, hw, k, r))]);
    // MACs over the whole output: the dense ConvTranspose c·c·k² per input position; the
    // chain r·c at the input, r·r·k² per input position, c·r at the 4x larger output.
    const denseMacs = hw * hw * c * c * k * k;
    trows.push([`${c}→${c} ${k}x${k} s2 @${hw}²`, ms[0]!.toFixed(3), String(runs), ...ranks.map((r, i) => cell(`${r},${r}`, ms[i + 1]!, ms[0]!, denseMacs / (hw * hw * (r * c + r * r * k * k) + 4 * hw * hw * c * r)))]);
    process.stderr.write(`done convtranspose ${c}x${hw} k${k}\n`);
  }
  console.log('\nstride-2 ConvTranspose: Tucker-2 chain at ranks (0.25C, 0.25C) and (0.5C, 0.5C): median ms, speed-up / MACs cut = realised');
  console.log(table(['ConvTranspose', 'dense ms', 'rounds', 'tucker2 0.25', 'tucker2 0.5'], trows, ['l', 'r', 'r', 'l', 'l']));
}
console.log(`load after: ${loadLine()}`);
