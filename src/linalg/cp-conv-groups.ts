/**
 * CP of a grouped conv kernel, one CP per group (cp-conv.ts), as the weights of a grouped
 * chain: group j's kernel W_j [t, s, K] (t = T/g, s = S/g) ≈ Σ_r A_j[:, r]∘B_j[:, r]∘C_j[:, r]
 * at the same rank R in every group. Stacking the groups' factors gives the chain weights
 * directly: first [g·R, s] (1x1, group g: group j's R channels read its s inputs), depth
 * [g·R, K] (depthwise), last [T, R] (1x1, group g: group j's t outputs read its R channels).
 * Errors combine over groups as ratios of sums (weight: ‖ΔW_j‖² over ‖W_j‖²; data: the
 * groups' output-error traces over theirs). One group is cp-conv itself, unchanged.
 */
import { cpRankBound } from './cp-als.js';
import { cpConv, type CpConv, type CpConvOptions } from './cp-conv.js';
import { cpDataSweepCount } from './cp-data-als.js';
import { worstStabilized } from './cp-sensitivity.js';
import type { AnchoredPatch } from './anchored.js';
import type { Matrix } from './matrix.js';

export interface CpConvGroupsOptions extends Omit<CpConvOptions, 'whitening' | 'patches' | 'anchor'> {
  /** Per group (cp-conv.ts's options of the same name); an entry may be absent. */
  whitening?: ({ ls: Matrix; lk?: Matrix } | undefined)[];
  patches?: { gram: Float64Array; mean?: Float64Array }[];
  anchor?: { patch: AnchoredPatch[]; damp: number };
}

export interface CpConvGroups extends CpConv {
  /** Each group's fit, in group order (one entry for group 1). */
  parts: CpConv[];
}

/** CP per group of `kernel` ([T, s, K] as stored, `groups` groups of T/g output channels) at rank `rank`. */
export function cpConvGroups(kernel: { data: Float32Array; shape: readonly [number, number, number]; groups: number }, rank: number, opts: CpConvGroupsOptions = {}): CpConvGroups {
  const [T, s, K] = kernel.shape;
  const G = kernel.groups;
  const t = T / G;
  const per = t * s * K;
  const parts: CpConv[] = [];
  // The data sweeps' work bound holds for the whole conv, not per group.
  const dataSweeps = opts.dataSweeps ?? cpDataSweepCount(t, s, K, Math.min(rank, Math.floor(cpRankBound([t, s, K]))), G);
  for (let j = 0; j < G; j++) {
    const f = cpConv({ data: kernel.data.subarray(j * per, (j + 1) * per), shape: [t, s, K] }, rank, {
      rng: opts.rng, gemm: opts.gemm, maxIter: opts.maxIter, tol: opts.tol, stable: opts.stable, dataSweeps,
      whitening: opts.whitening?.[j], patches: opts.patches?.[j], anchor: opts.anchor && { patch: opts.anchor.patch[j]!, damp: opts.anchor.damp },
    });
    parts.push(f);
    // A group that failed fails the whole: no factors to stack.
    if (!Number.isFinite(f.alsError) || !Number.isFinite(f.relError)) return { ...f, parts };
  }
  if (G === 1) return { ...parts[0]!, parts };
  const R = parts[0]!.rank;
  const first = new Float32Array(G * R * s);
  const depth = new Float32Array(G * R * K);
  const last = new Float32Array(T * R);
  let num = 0;
  let den = 0;
  let dNum = 0;
  let dDen = 0;
  let data = true;
  let alsError = 0;
  parts.forEach((f, j) => {
    first.set(f.first, j * R * s);
    depth.set(f.depth, j * R * K);
    last.set(f.last, j * t * R);
    let e = 0;
    const w = kernel.data.subarray(j * per, (j + 1) * per);
    for (let i = 0; i < per; i++) e += w[i]! * w[i]!;
    num += f.relError * f.relError * e;
    den += e;
    alsError = Math.max(alsError, f.alsError);
    if (f.dataError === undefined || f.dataDen === undefined) data = false;
    else { dNum += f.dataError * f.dataError * f.dataDen; dDen += f.dataDen; }
  });
  const biasDelta = parts.every((f) => f.biasDelta) ? new Float64Array(T) : undefined;
  if (biasDelta) parts.forEach((f, j) => biasDelta.set(f.biasDelta!, j * t));
  // The layer's sensitivity is its most sensitive group's (each group is its own CP).
  const worst = parts.reduce((a, f) => ((f.sensitivity?.ratio ?? 0) > (a.sensitivity?.ratio ?? 0) ? f : a), parts[0]!);
  const stabilized = parts.filter((f) => f.stabilized).map((f) => f.stabilized!);
  return {
    rank: R, first, depth, last, parts,
    relError: den > 0 ? Math.sqrt(num / den) : 0, alsError,
    converged: parts.every((f) => f.converged), iterations: Math.max(...parts.map((f) => f.iterations)),
    dataError: data ? (dDen > 0 ? Math.sqrt(dNum / dDen) : 0) : undefined, dataDen: data ? dDen : undefined, biasDelta,
    sensitivity: worst.sensitivity,
    stabilized: worstStabilized(stabilized),
    ...(parts.some((f) => f.dataSweeps) ? { dataSweeps: Math.max(...parts.map((f) => f.dataSweeps ?? 0)) } : {}),
  };
}
