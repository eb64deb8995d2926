/**
 * npm run bench:chains [-- --shapes=64x56,128x28,256x14] [-- --fractions=0.25,0.5] [-- --threads=1]
 *                      [-- --sections=dense,grouped,convtranspose]
 *
 * Micro-bench of each conv chain against the dense 3x3 conv it replaces (issue 19's
 * "realised speed-up per MAC cut"): for C channels in and out at H=W, Tucker-2 at ranks
 * (ρC, ρC), and CP, CP-4, spatial SVD and Tensor-Train at the largest rank whose params
 * do not exceed Tucker-2's. All models of one shape are timed in one interleaved loop
 * (timeSessions: each round runs every model once, starting one further along), in
 * ORT-node at graph optimization 'all' as the latency screen times layers; medians.
 * Weights are random: ORT's CPU kernels cost the same whatever the values. Each model
 * returns one element of its output (verify/kept-outputs.ts keptInside): in a model the output
 * stays in ORT, and copying it out would cost more than the conv at 512².
 *
 * Columns per chain: ms (median), speed-up over dense, MACs cut (dense MACs / chain MACs)
 * and realised = speed-up / MACs cut (1.0: the chain is as fast as its MACs promise).
 *
 * Two more tables: grouped 3x3 convs (groups 2 and 4, 128 and 256 channels) against their grouped Tucker-2,
 * CP-per-group and spatial SVD chains (as conv-tucker2, conv-cp and conv-spatial-svd write
 * them: every conv of the chain takes the group count, CP's depthwise conv runs on g·R
 * channels), and stride-2 ConvTransposes (3x3 with output_padding, 4x4, 2x2, 1x1) against the
 * Tucker-2 chain 1x1 → ConvTranspose core → 1x1 (convtranspose-tucker2.ts) and the SVD pair
 * 1x1 Conv → thinner ConvTranspose (convtranspose-svd.ts; the only chain for a 1x1).
 * `--sections=dense,grouped,convtranspose` picks the tables (default all); `--no-extra`
 * runs the dense one alone. `--fractions` applies to every table.
 */
import { ModelBuilder } from '../models/builder.js';
import { encodeModel } from '../src/onnx/codec.js';
import { keptInside } from '../src/verify/kept-outputs.js';
import { table } from '../src/report/format.js';
import { timeSessions } from '../src/verify/latency.js';
import { createSession, type Session } from '../src/verify/session.js';
import { createRng } from '../src/util/rng.js';
import { intOption, loadLine, machineLine } from './bench-util.js';

const TOOL = 'bench:chains';
const argv = process.argv.slice(2);
const listOption = (name: string, dflt: string): string => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt;
const shapes = listOption('shapes', '64x56,128x28,256x14,128x56,256x28').split(',').map((s) => s.split('x').map(Number) as [number, number]);
const fractions = listOption('fractions', '0.25,0.5').split(',').map(Number);
const threads = intOption(argv, 'threads', 1, TOOL);
// --sections=dense,grouped,convtranspose (default all; --no-extra: dense alone).
const sections = listOption('sections', argv.includes('--no-extra') ? 'dense' : 'dense,grouped,convtranspose').split(',');
for (const x of sections) if (!['dense', 'grouped', 'convtranspose'].includes(x)) { process.stderr.write(`${TOOL}: --sections takes dense, grouped, convtranspose, got ${x}\n`); process.exit(2); }
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
  return encodeModel(keptInside(b.build()));
}

console.log(`machine: ${machineLine()}; ORT-node ${threads} thread(s), graph optimization 'all'; load before: ${loadLine()}`);

const rows: string[][] = [];
for (const [c, hw] of sections.includes('dense') ? shapes : []) {
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
if (sections.includes('dense')) {
  console.log('\ndense 3x3 convs: each chain: rank: median ms, speed-up over dense / MACs cut = realised fraction (params ≤ Tucker-2 at ranks ρC, ρC)');
  console.log(table(['conv', 'ρ', 'dense ms', 'rounds', ...CHAINS.map((c) => c.name)], rows, ['l', 'r', 'r', 'r', ...CHAINS.map(() => 'l' as const)]));
}

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

if (sections.includes('grouped')) {
  // Grouped convs: each chain at the largest rank per group whose params do not exceed grouped Tucker-2's at (ρ·C/g, ρ·C/g).
  const GROUPED: { name: string; steps: (c: number, g: number, r: number) => Step[] }[] = [
    { name: 'tucker2', steps: (c, g, r) => [{ out: g * r, k: [1, 1], group: g, pads: P0 }, { out: g * r, k: [3, 3], group: g, pads: SAME3 }, { out: c, k: [1, 1], group: g, pads: P0 }] },
    { name: 'cp (per group)', steps: (c, g, r) => [{ out: g * r, k: [1, 1], group: g, pads: P0 }, { out: g * r, k: [3, 3], group: g * r, pads: SAME3 }, { out: c, k: [1, 1], group: g, pads: P0 }] },
    { name: 'spatial-svd', steps: (c, g, r) => [{ out: g * r, k: [3, 1], group: g, pads: [1, 0, 1, 0] }, { out: c, k: [1, 3], group: g, pads: [0, 1, 0, 1] }] },
  ];
  const grows: string[][] = [];
  for (const [c, hw, g, frac] of ([[128, 28, 2], [128, 28, 4], [256, 14, 2], [256, 14, 4]] as const).flatMap((x) => fractions.map((fr) => [...x, fr] as const))) {
    const r = Math.max(1, Math.round((c / g) * frac));
    const limit = params(c, GROUPED[0]!.steps(c, g, r));
    const picked = GROUPED.map((ch, i) => {
      let k = r;
      if (i > 0) { k = 1; while (k < 9 * c && params(c, ch.steps(c, g, k + 1)) <= limit) k++; }
      return { rank: k, steps: ch.steps(c, g, k) };
    });
    const denseSteps: Step[] = [{ out: c, k: [3, 3], group: g, pads: SAME3 }];
    const { ms, runs } = await timeRow([chainModel(c, hw, denseSteps), ...picked.map((p) => chainModel(c, hw, p.steps))]);
    const denseMacs = params(c, denseSteps);
    grows.push([`${c}→${c} 3x3 g${g} @${hw}²`, `${frac}`, ms[0]!.toFixed(3), String(runs), ...picked.map((p, i) => cell(`${p.rank}/group`, ms[i + 1]!, ms[0]!, denseMacs / params(c, p.steps)))]);
    process.stderr.write(`done grouped ${c}x${hw} g${g} ρ=${frac}\n`);
  }
  console.log('\ngrouped 3x3 convs: each chain at rank per group: median ms, speed-up / MACs cut = realised (params ≤ grouped Tucker-2 at ranks ρ·C/g per group)');
  console.log(table(['conv', 'ρ', 'dense ms', 'rounds', ...GROUPED.map((c) => c.name)], grows, ['l', 'r', 'r', 'r', ...GROUPED.map(() => 'l' as const)]));
}

if (sections.includes('convtranspose')) {

  // Stride-2 ConvTranspose c→c on an hw² input against the chains its passes write:
  // convtranspose-tucker2, 1x1 (c→r) → ConvTranspose core (r→r) → 1x1 (r→c) at the output;
  // convtranspose-svd, 1x1 Conv (c→r) at the input → ConvTranspose (r→c) with every spatial
  // attribute (for a 1x1 kernel with stride 2 the right factor stays a ConvTranspose: only a
  // plain stride-1 1x1 becomes two Convs).
  type Chain = { kind: 'dense' } | { kind: 'tucker2'; r: number } | { kind: 'svd'; r: number };
  const convT = (c: number, hw: number, k: number, ch: Chain): Uint8Array => {
    const b = new ModelBuilder({ opset: 13 });
    let x = b.input('x', [1, c, hw, hw]);
    const p = k >= 3 ? 1 : 0;
    const attrs = { kernel_shape: [k, k], strides: [2, 2], pads: [p, p, p, p], ...(k === 3 && { output_padding: [1, 1] }) };
    const w = (name: string, dims: number[]) => b.init(name, dims, Float32Array.from({ length: dims.reduce((q, v) => q * v, 1) }, () => rng.normal() * 0.1));
    if (ch.kind === 'dense') {
      x = b.node('ConvTranspose', [x, w('w', [c, c, k, k])], attrs, { name: 'ct' });
    } else if (ch.kind === 'tucker2') {
      x = b.node('Conv', [x, w('w0', [ch.r, c, 1, 1])], {}, { name: 'a' });
      x = b.node('ConvTranspose', [x, w('w1', [ch.r, ch.r, k, k])], attrs, { name: 'core' });
      x = b.node('Conv', [x, w('w2', [c, ch.r, 1, 1])], {}, { name: 'c' });
    } else {
      x = b.node('Conv', [x, w('w0', [ch.r, c, 1, 1])], {}, { name: 'a' });
      x = b.node('ConvTranspose', [x, w('w1', [ch.r, c, k, k])], attrs, { name: 'b' });
    }
    b.output(x);
    return encodeModel(keptInside(b.build()));
  };
  // MACs over the whole run: the dense ConvTranspose c·c·k² per input position; Tucker-2
  // r·c and r·r·k² per input position and c·r per output position; the SVD pair r·c and
  // r·c·k² per input position. Params: the same counts per position.
  const out = (hw: number, k: number): number => (k === 1 ? 2 * hw - 1 : 2 * hw);
  const macsOf = (c: number, hw: number, k: number, ch: Chain): number => (ch.kind === 'dense' ? hw * hw * c * c * k * k
    : ch.kind === 'tucker2' ? hw * hw * (ch.r * c + ch.r * ch.r * k * k) + out(hw, k) ** 2 * c * ch.r
      : hw * hw * ch.r * c * (1 + k * k));
  const paramsOf = (c: number, k: number, ch: Chain): number => (ch.kind === 'dense' ? c * c * k * k
    : ch.kind === 'tucker2' ? ch.r * c * 2 + ch.r * ch.r * k * k : ch.r * c * (1 + k * k));
  const trows: string[][] = [];
  for (const [c, hw, k] of [[64, 28, 3], [64, 28, 4], [128, 14, 4], [256, 14, 4], [128, 28, 2], [128, 28, 1]] as const) {
    // Tucker-2 at ranks (ρC, ρC); the SVD pair at the largest rank within Tucker-2's params
    // (1x1, which Tucker-2 declines: at rank ρC/2, ρ of the dense params).
    const cols = fractions.flatMap((f): (Chain & { r: number })[] => {
      const r = Math.max(1, Math.round(c * f));
      if (k === 1) return [{ kind: 'svd', r: Math.max(1, Math.round((c * f) / 2)) }];
      return [{ kind: 'tucker2', r }, { kind: 'svd', r: Math.max(1, Math.floor(paramsOf(c, k, { kind: 'tucker2', r }) / paramsOf(c, k, { kind: 'svd', r: 1 }))) }];
    });
    const { ms, runs } = await timeRow([convT(c, hw, k, { kind: 'dense' }), ...cols.map((ch) => convT(c, hw, k, ch))]);
    const denseMacs = macsOf(c, hw, k, { kind: 'dense' });
    const cells = cols.map((ch, i) => cell(ch.kind === 'tucker2' ? `${ch.r},${ch.r}` : `${ch.r}`, ms[i + 1]!, ms[0]!, denseMacs / macsOf(c, hw, k, ch)));
    // Columns: tucker2 and svd per ρ ('-' where Tucker-2 does not apply).
    const byCol = k === 1 ? cells.flatMap((x) => ['-', x]) : cells;
    trows.push([`${c}→${c} ${k}x${k} s2 @${hw}²`, ms[0]!.toFixed(3), String(runs), ...byCol]);
    process.stderr.write(`done convtranspose ${c}x${hw} k${k}\n`);
  }
  console.log('\nstride-2 ConvTranspose: Tucker-2 chain at ranks (ρC, ρC), SVD pair at the largest rank within its params (1x1: rank ρC/2): rank: median ms, speed-up / MACs cut = realised');
  console.log(table(['ConvTranspose', 'dense ms', 'rounds', ...fractions.flatMap((f) => [`tucker2 ρ ${f}`, `svd pair ρ ${f}`])], trows, ['l', 'r', 'r', ...fractions.flatMap(() => ['l', 'l'] as const)]));
}
console.log(`load after: ${loadLine()}`);
