/**
 * Factorizations of one run, reused when a layer is fitted again at the same ranks on the
 * same calibration statistics: a budget's allocations (and its final fit) refit the ranks
 * its sensitivity trials fitted, each time on a freshly loaded model, and a Tucker-2 of a
 * 512-channel conv takes seconds to tens of seconds.
 *
 * Entries hang off the statistics object they were fitted on (a WeakMap), so statistics
 * measured anew (a later stage, an anchored wave) never meet an older fit, and a fit lives
 * only as long as its statistics. Weight-only fits are not kept: they draw from the run's
 * random stream, so skipping one would change every later draw.
 */
export type FitCache = WeakMap<object, Map<string, unknown>>;

export const createFitCache = (): FitCache => new WeakMap();

/** `fit()`, or its earlier result for the same statistics object and key. */
export function cachedFit<T>(cache: FitCache | undefined, stats: object | undefined, key: string, fit: () => T): T {
  if (!cache || !stats) return fit();
  let byKey = cache.get(stats);
  if (!byKey) { byKey = new Map(); cache.set(stats, byKey); }
  if (byKey.has(key)) return byKey.get(key) as T;
  const value = fit();
  byKey.set(key, value);
  return value;
}
