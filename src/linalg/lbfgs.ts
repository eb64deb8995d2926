/**
 * Limited-memory BFGS with a backtracking (Armijo) line search, for a smooth loss whose
 * value and gradient come together from one (expensive, asynchronous) evaluation.
 *
 * Direction: d = −H·g by the two-loop recursion over the last `memory` pairs
 * (s = x_{k+1} − x_k, y = g_{k+1} − g_k), H₀ = (sᵀy / yᵀy)·I (Nocedal & Wright, alg. 7.4);
 * a pair with sᵀy ≤ 0 (no positive curvature seen) is not kept. The first direction is
 * −g, scaled so its first-order decrease is `firstDecrease` of the loss (a loss ≥ 0). A trial that does not lower the loss
 * by 10⁻⁴ of the predicted decrease halves the step; the search restarts from −g when a
 * direction is not one of descent. Every evaluation counts against `evaluations`.
 */

export interface Evaluation {
  loss: number;
  grad: Float64Array;
}

export interface LbfgsOptions {
  /** Evaluations of the loss allowed in all (the start included). */
  evaluations: number;
  memory?: number;
  /** The steepest-descent step's first-order decrease, relative to the loss (the loss is ≥ 0). */
  firstDecrease?: number;
  /** Called after every evaluation with its count and the best loss so far. */
  onEvaluation?: (count: number, best: number) => void;
}

export interface LbfgsResult {
  /** The point with the lowest loss seen, its loss, and the loss at the start. */
  x: Float64Array;
  loss: number;
  start: number;
  evaluations: number;
  /** The evaluation (0: the start) that gave `x`. */
  bestAt: number;
}

const dot = (a: Float64Array, b: Float64Array): number => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!; return s; };

export async function lbfgsMinimize(f: (x: Float64Array) => Promise<Evaluation | undefined>, x0: Float64Array, o: LbfgsOptions): Promise<LbfgsResult | undefined> {
  const m = o.memory ?? 10;
  let x = x0.slice();
  let count = 0;
  const first = await f(x);
  count++;
  if (!first || !Number.isFinite(first.loss)) return undefined;
  let cur = first;
  const best = { x: x.slice(), loss: first.loss, at: 0 };
  o.onEvaluation?.(count, best.loss);
  const ss: Float64Array[] = [];
  const ys: Float64Array[] = [];
  const rho: number[] = [];
  while (count < o.evaluations) {
    let d = direction(cur.grad, ss, ys, rho);
    let slope = dot(d, cur.grad);
    let t = 1;
    if (ss.length === 0 || !(slope < 0)) {
      // No curvature yet, or not a descent direction: steepest descent, sized to move x a little.
      d = cur.grad.map((v) => -v);
      slope = dot(d, cur.grad);
      // Sized so the first-order decrease is a small part of the loss (a loss ≥ 0 cannot fall further than to 0).
      t = ((o.firstDecrease ?? 0.02) * Math.abs(cur.loss)) / (-slope || 1);
      ss.length = 0; ys.length = 0; rho.length = 0;
    }
    if (!(slope < 0)) break;
    let next: Evaluation | undefined;
    let xNext = x;
    while (count < o.evaluations) {
      xNext = x.map((v, i) => v + t * d[i]!);
      next = await f(xNext);
      count++;
      if (next && Number.isFinite(next.loss) && next.loss < best.loss) { best.x = xNext.slice(); best.loss = next.loss; best.at = count - 1; }
      o.onEvaluation?.(count, best.loss);
      if (next && Number.isFinite(next.loss) && next.loss <= cur.loss + 1e-4 * t * slope) break;
      next = undefined;
      t /= 2;
    }
    if (!next) break;
    const s = xNext.map((v, i) => v - x[i]!);
    const y = next.grad.map((v, i) => v - cur.grad[i]!);
    const sy = dot(s, y);
    if (sy > 1e-12 * Math.sqrt(dot(s, s) * dot(y, y))) {
      ss.push(s); ys.push(y); rho.push(1 / sy);
      if (ss.length > m) { ss.shift(); ys.shift(); rho.shift(); }
    }
    x = xNext;
    cur = next;
  }
  return { x: best.x, loss: best.loss, start: first.loss, evaluations: count, bestAt: best.at };
}

/** −H·g by the two-loop recursion. */
function direction(g: Float64Array, ss: Float64Array[], ys: Float64Array[], rho: number[]): Float64Array {
  const q = g.slice();
  const k = ss.length;
  const alpha = new Array<number>(k);
  for (let i = k - 1; i >= 0; i--) {
    alpha[i] = rho[i]! * dot(ss[i]!, q);
    const y = ys[i]!;
    for (let j = 0; j < q.length; j++) q[j] -= alpha[i]! * y[j]!;
  }
  if (k > 0) {
    const gamma = dot(ss[k - 1]!, ys[k - 1]!) / dot(ys[k - 1]!, ys[k - 1]!);
    for (let j = 0; j < q.length; j++) q[j] *= gamma;
  }
  for (let i = 0; i < k; i++) {
    const b = rho[i]! * dot(ys[i]!, q);
    const s = ss[i]!;
    for (let j = 0; j < q.length; j++) q[j] += s[j]! * (alpha[i]! - b);
  }
  for (let j = 0; j < q.length; j++) q[j] = -q[j]!;
  return q;
}
