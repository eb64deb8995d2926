/**
 * Empirical variational Bayesian matrix factorisation (EVBMF), global analytic
 * solution of Nakajima, Sugiyama, Babacan & Tomioka (JMLR 2013), with the noise
 * variance σ² estimated by minimising the free energy (Nakajima et al. 2015,
 * "Condition for perfect dimensionality recovery by variational Bayesian PCA").
 * It picks a rank with no user threshold: singular values above
 * γ̲ = σ·√(M·x̲) are kept, the rest are treated as noise.
 *
 * Notation (L ≤ M, α = L/M): with x = γ²/(Mσ²), a component survives iff x > x̲ where
 * x̲ = (1 + τ̲)(1 + α/τ̲) and τ̲ > 0 solves log(1+τ) + α·log(1+τ/α) = τ. Its
 * free-energy contribution is ψ(x) = x − log x (noise) plus
 * ψ₁(x) = log(1+τ) + α·log(1+τ/α) − τ for survivors, τ(x) = ½(x − 1 − α + √((x−1−α)² − 4α)).
 */
import { LrError } from '../errors.js';
import { assertFinite, type Matrix } from './matrix.js';
import { singularValues } from './svd.js';
import { checkTensor, swapLeadingAxes, type Tensor } from './tensor.js';

export interface EvbmfResult {
  /** Estimated rank (0 means: nothing above the noise). */
  rank: number;
  /** Estimated noise variance σ². */
  sigma2: number;
  /** Singular-value threshold γ̲ used. */
  threshold: number;
  /** VB-shrunk singular values of the kept components. */
  shrunk: Float64Array;
}

/** EVBMF rank of a matrix (computes its singular values). */
export function evbmf(a: Matrix): EvbmfResult {
  assertFinite(a, 'evbmf input');
  return evbmfFromSingularValues(singularValues(a), a.rows, a.cols);
}

/**
 * EVBMF from the singular values of an m×n matrix (descending). A partial (leading)
 * spectrum is allowed when `totalEnergy` = ‖V‖²_F is given: the energy not covered
 * by the given values is pooled over the missing ones. Without it, missing values
 * count as zero.
 */
export function evbmfFromSingularValues(s: ArrayLike<number>, m: number, n: number, totalEnergy?: number): EvbmfResult {
  const L = Math.min(m, n);
  const M = Math.max(m, n);
  if (L < 1) throw new LrError('numeric', `evbmf: empty matrix ${m}x${n}`);
  const gammas = Float64Array.from({ length: Math.min(s.length, L) }, (_, i) => s[i]!);
  for (let i = 0; i < gammas.length; i++) {
    if (!Number.isFinite(gammas[i]!) || gammas[i]! < 0) throw new LrError('numeric', `evbmf: singular value ${i} is ${gammas[i]}`);
  }
  gammas.sort((a, b) => b - a);
  const H = gammas.length;
  const alpha = L / M;
  const tauBar = solveTauBar(alpha);
  const xBar = (1 + tauBar) * (1 + alpha / tauBar);
  let total = 0;
  for (const g of gammas) total += g * g;
  if (totalEnergy !== undefined && totalEnergy > total) total = totalEnergy;
  const none = { rank: 0, sigma2: 0, threshold: 0, shrunk: new Float64Array(0) };
  if (total === 0) return none;

  // Search range for σ² (JMLR 2013, Thm. on the noise estimate): above, all energy is
  // noise; below, at most H̄ = ⌈L/(1+α)⌉ − 1 components can be signal.
  const upper = total / (L * M);
  const hBar = Math.min(Math.ceil(L / (1 + alpha)) - 1, H - 1);
  let tail = 0;
  for (let h = Math.max(hBar, 0); h < H; h++) tail += gammas[h]! ** 2;
  const lowerA = hBar >= 0 && hBar < H ? gammas[hBar]! ** 2 / (M * xBar) : 0;
  const lowerB = tail / (M * Math.max(L - Math.max(hBar, 0), 1));
  let lower = Math.max(lowerA, lowerB, upper * 1e-12);
  if (!(lower < upper)) lower = upper * 1e-6;

  const objective = (sigma2: number): number => {
    let obj = 0;
    let used = 0;
    for (let h = 0; h < H; h++) {
      const g2 = gammas[h]! * gammas[h]!;
      used += g2;
      const x = g2 / (M * sigma2);
      if (x <= 0) continue; // zero singular values: constant contribution
      if (x > xBar) {
        const t = tau(x, alpha);
        obj += x - t + Math.log((t + 1) / x) + alpha * Math.log(t / alpha + 1);
      } else {
        obj += x - Math.log(x);
      }
    }
    // Components beyond the given values (and zeros) contribute residual/(Mσ²) + log σ² each.
    const residual = Math.max(0, total - used);
    const zeroCount = L - H + gammas.reduce((c, g) => c + (g === 0 ? 1 : 0), 0);
    return obj + residual / (M * sigma2) + zeroCount * Math.log(sigma2);
  };

  // The objective can have several local minima: scan log σ² on a grid, then refine
  // the best bracket by golden-section search.
  const lo = Math.log(lower);
  const hi = Math.log(upper);
  const steps = 200;
  let best = 0;
  let bestVal = Infinity;
  for (let i = 0; i <= steps; i++) {
    const v = objective(Math.exp(lo + ((hi - lo) * i) / steps));
    if (v < bestVal) {
      bestVal = v;
      best = i;
    }
  }
  let a = lo + ((hi - lo) * Math.max(best - 1, 0)) / steps;
  let b = lo + ((hi - lo) * Math.min(best + 1, steps)) / steps;
  const phi = (Math.sqrt(5) - 1) / 2;
  for (let it = 0; it < 80 && b - a > 1e-12; it++) {
    const c = b - phi * (b - a);
    const d = a + phi * (b - a);
    if (objective(Math.exp(c)) < objective(Math.exp(d))) b = d;
    else a = c;
  }
  const sigma2 = Math.exp((a + b) / 2);
  const threshold = Math.sqrt(sigma2 * M * xBar);
  const kept: number[] = [];
  for (let h = 0; h < H; h++) {
    const g = gammas[h]!;
    if (g <= threshold) break;
    // EVB shrinkage estimator of the kept singular value.
    const q = 1 - ((L + M) * sigma2) / (g * g);
    kept.push((g / 2) * (q + Math.sqrt(Math.max(0, q * q - (4 * L * M * sigma2 * sigma2) / g ** 4))));
  }
  return { rank: kept.length, sigma2, threshold, shrunk: Float64Array.from(kept) };
}

/** Positive root of log(1+τ) + α·log(1+τ/α) − τ = 0 (≈ 2.5129·√α), by bisection. */
export function solveTauBar(alpha: number): number {
  const f = (t: number) => Math.log1p(t) + alpha * Math.log1p(t / alpha) - t;
  let lo = 1e-3 * Math.sqrt(alpha); // f > 0 just right of 0 (f'(0) = 1)
  let hi = 1;
  while (f(hi) > 0) hi *= 2;
  for (let i = 0; i < 200; i++) {
    const mid = 0.5 * (lo + hi);
    if (f(mid) > 0) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

function tau(x: number, alpha: number): number {
  const b = x - (1 + alpha);
  return 0.5 * (b + Math.sqrt(Math.max(0, b * b - 4 * alpha)));
}

/**
 * EVBMF ranks of a conv kernel [T, S, kh, kw] on its two channel unfoldings, as used
 * for Tucker-2 rank selection (Kim et al. 2015): returns [R1 (mode S), R2 (mode T)].
 */
export function evbmfConvRanks(kernel: Tensor): [number, number] {
  checkTensor(kernel, 'evbmfConvRanks');
  const [T, S] = kernel.shape as [number, number];
  const k = kernel.data.length / (T * S);
  const xT: Matrix = { rows: T, cols: S * k, data: kernel.data };
  const xS: Matrix = { rows: S, cols: T * k, data: swapLeadingAxes(kernel.data, T, S, k) };
  return [evbmf(xS).rank, evbmf(xT).rank];
}
