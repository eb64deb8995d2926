/**
 * L-BFGS (src/linalg/lbfgs.ts) on problems whose minimum is known in closed form: an
 * ill-conditioned quadratic (condition number 10⁴, where steepest descent crawls) and
 * Rosenbrock's valley; it keeps the best point seen, spends no more evaluations than
 * allowed, and a failing first evaluation gives nothing.
 */
import { describe, expect, it } from 'vitest';
import { lbfgsMinimize, type Evaluation } from '../../src/linalg/lbfgs.js';
import { createRng } from '../../src/util/rng.js';

/** ½ Σ c_i (x_i − a_i)² with c spread over four decades. */
function quadratic(n: number) {
  const rng = createRng(5);
  const c = Float64Array.from({ length: n }, (_, i) => 10 ** (4 * i / (n - 1)));
  const a = Float64Array.from({ length: n }, () => rng.normal());
  let calls = 0;
  const f = async (x: Float64Array): Promise<Evaluation> => {
    calls++;
    let loss = 0;
    const grad = new Float64Array(n);
    for (let i = 0; i < n; i++) { const d = x[i]! - a[i]!; loss += 0.5 * c[i]! * d * d; grad[i] = c[i]! * d; }
    return { loss, grad };
  };
  return { f, a, calls: () => calls };
}

describe('L-BFGS', () => {
  it('an ill-conditioned quadratic: its loss 10⁻⁷ of the start and x within 0.05 of the minimum in 300 evaluations, never more', async () => {
    const q = quadratic(50);
    const r = await lbfgsMinimize(q.f, new Float64Array(50), { evaluations: 300 });
    expect(r).toBeDefined();
    expect(q.calls()).toBeLessThanOrEqual(300);
    expect(r!.evaluations).toBe(q.calls());
    expect(r!.loss).toBeLessThan(1e-7 * r!.start);
    const dist = Math.hypot(...r!.x.map((v, i) => v - q.a[i]!));
    expect(dist).toBeLessThan(0.05);
    // The loss reported is the loss at the point returned.
    expect((await q.f(r!.x)).loss).toBeCloseTo(r!.loss, 12);
  });

  it('Rosenbrock from (−1.2, 1): to (1, 1) within 1e-3', async () => {
    const f = async (x: Float64Array): Promise<Evaluation> => {
      const [u, v] = [x[0]!, x[1]!];
      return { loss: (1 - u) ** 2 + 100 * (v - u * u) ** 2, grad: Float64Array.of(-2 * (1 - u) - 400 * u * (v - u * u), 200 * (v - u * u)) };
    };
    const r = await lbfgsMinimize(f, Float64Array.of(-1.2, 1), { evaluations: 300 });
    expect(Math.abs(r!.x[0]! - 1)).toBeLessThan(1e-3);
    expect(Math.abs(r!.x[1]! - 1)).toBeLessThan(1e-3);
  });

  it('keeps the best point when later evaluations fail, and a failed start gives nothing', async () => {
    const q = quadratic(10);
    let n = 0;
    const flaky = async (x: Float64Array): Promise<Evaluation | undefined> => (++n > 6 ? undefined : q.f(x));
    const r = await lbfgsMinimize(flaky, new Float64Array(10), { evaluations: 40 });
    expect(r!.loss).toBeLessThan(r!.start);
    expect(r!.bestAt).toBeLessThanOrEqual(5);
    expect((await q.f(r!.x)).loss).toBeCloseTo(r!.loss, 12);
    expect(await lbfgsMinimize(async () => undefined, new Float64Array(3), { evaluations: 5 })).toBeUndefined();
  });
});
