/**
 * Student's t for the unseen-input margin (linalg/student-t.ts), against published table
 * values of the one-sided 95% and 97.5% quantiles and the closed forms for ν = 1 and 2.
 */
import { describe, expect, it } from 'vitest';
import { studentTQuantile, studentTWithin } from '../../src/linalg/student-t.js';

describe('studentTWithin', () => {
  it('matches the closed forms for one and two degrees of freedom', () => {
    for (const t of [0.1, 0.7, 1, 2.5, 13]) {
      // ν = 1 is the Cauchy: P(|T| < t) = 2·atan(t)/π; ν = 2: t/√(2 + t²).
      expect(studentTWithin(t, 1)).toBeCloseTo((2 / Math.PI) * Math.atan(t), 14);
      expect(studentTWithin(t, 2)).toBeCloseTo(t / Math.sqrt(2 + t * t), 14);
    }
  });

  it('rises with t, tends to the normal as ν grows, and is 0 at t = 0', () => {
    for (const nu of [1, 2, 3, 4, 7, 30]) {
      expect(studentTWithin(0, nu)).toBe(0);
      let prev = 0;
      for (let t = 0.25; t < 8; t += 0.25) {
        const p = studentTWithin(t, nu);
        expect(p).toBeGreaterThan(prev);
        expect(p).toBeLessThan(1);
        prev = p;
      }
    }
    // P(|Z| < 1.959964) = 0.95 for the normal.
    expect(studentTWithin(1.959964, 4000)).toBeCloseTo(0.95, 3);
  });

  it('refuses degrees of freedom that are not whole and positive', () => {
    expect(() => studentTWithin(1, 0)).toThrow(RangeError);
    expect(() => studentTWithin(1, 2.5)).toThrow(RangeError);
  });
});

describe('studentTQuantile', () => {
  it('gives the tabulated quantiles', () => {
    const q95: [number, number][] = [[1, 6.3138], [2, 2.9200], [3, 2.3534], [4, 2.1318], [5, 2.0150], [7, 1.8946], [10, 1.8125], [30, 1.6973]];
    for (const [nu, q] of q95) expect(studentTQuantile(0.95, nu)).toBeCloseTo(q, 3);
    const q975: [number, number][] = [[1, 12.7062], [2, 4.3027], [5, 2.5706], [20, 2.0860]];
    for (const [nu, q] of q975) expect(studentTQuantile(0.975, nu)).toBeCloseTo(q, 3);
    expect(studentTQuantile(0.5, 3)).toBeCloseTo(0, 9);
    expect(studentTQuantile(0.95, 5000)).toBeCloseTo(1.6449, 3);
  });

  it('refuses probabilities outside [0.5, 1)', () => {
    expect(() => studentTQuantile(1, 3)).toThrow(RangeError);
    expect(() => studentTQuantile(0.4, 3)).toThrow(RangeError);
  });
});
