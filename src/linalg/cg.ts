/**
 * Conjugate gradients for op(x) = rhs with op symmetric positive definite, given only as
 * a product (the ALS factor steps' normal equations are too large to form: (rank·dim)²).
 * Optionally preconditioned by an approximate inverse of op (also symmetric positive).
 * It stops after `iterations` steps, when ‖r‖ ≤ tol·‖rhs‖, or when a direction has no
 * positive curvature (op only semidefinite there: the iterate so far is kept).
 */
export interface CgOptions {
  iterations: number;
  /** Relative residual ‖rhs − op(x)‖ / ‖rhs‖ at which to stop. Default 1e-12. */
  tol?: number;
  /** z ≈ op⁻¹·r; a new array (r is updated in place afterwards). */
  precondition?: (r: Float64Array) => ArrayLike<number>;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** x ≈ op⁻¹·rhs, starting from x0 (not modified). */
export function conjugateGradient(op: (x: Float64Array) => ArrayLike<number>, rhs: ArrayLike<number>, x0: ArrayLike<number>, o: CgOptions): Float64Array {
  const x = Float64Array.from(x0);
  const ax = op(x);
  const r = new Float64Array(x.length);
  for (let j = 0; j < r.length; j++) r[j] = rhs[j]! - ax[j]!;
  const stop = (o.tol ?? 1e-12) * Math.sqrt(dot(rhs, rhs));
  // Without a preconditioner z is r itself: read only before r's next update.
  let z: ArrayLike<number> = o.precondition ? o.precondition(r) : r;
  const p = Float64Array.from(z);
  let rz = dot(r, z);
  for (let it = 0; it < o.iterations; it++) {
    if (!(Math.sqrt(dot(r, r)) > stop)) break;
    const ap = op(p);
    const pap = dot(p, ap);
    if (!(pap > 0)) break;
    const alpha = rz / pap;
    for (let j = 0; j < r.length; j++) {
      x[j] += alpha * p[j]!;
      r[j] -= alpha * ap[j]!;
    }
    z = o.precondition ? o.precondition(r) : r;
    const rzNew = dot(r, z);
    const beta = rzNew / rz;
    rz = rzNew;
    for (let j = 0; j < p.length; j++) p[j] = z[j]! + beta * p[j]!;
  }
  return x;
}
