/** The budget of a run: --target-params/--target-macs/--target-latency F or --max-error E (rel. L2, cosine:C or top1:P). */
import { LrError } from '../errors.js';
import type { Budget } from '../optimize/budget.js';
import { checkNumber, givenFlags } from './check.js';
import type { OptimizeSettings } from './settings.js';

export function budgetOf(s: OptimizeSettings): Budget | undefined {
  const given = givenFlags({ 'target-params': s.targetParams, 'target-macs': s.targetMacs, 'target-latency': s.targetLatency, 'max-error': s.maxError });
  if (given.length > 1) throw new LrError('usage', `choose one budget (got ${given.join(', ')})`);
  const targets = { params: s.targetParams, macs: s.targetMacs, latency: s.targetLatency };
  for (const kind of ['params', 'macs', 'latency'] as const) {
    const f = checkNumber(`target-${kind}`, targets[kind], { min: 0, max: 1 });
    if (f !== undefined) return { kind, fraction: f };
  }
  if (s.maxError === undefined) return undefined;
  return errorBudget(String(s.maxError));
}

function errorBudget(e: string): Budget {
  const m = /^(?:(rel|cosine|top1):)?([0-9.eE+-]+)(%?)$/.exec(e.trim());
  const v = m ? Number(m[2]) / (m[3] ? 100 : 1) : NaN;
  if (!m || !Number.isFinite(v) || (m[3] && m[1] !== 'top1')) {
    throw new LrError('usage', `--max-error expects a relative L2 error (e.g. 0.1), cosine:C (e.g. cosine:0.99) or top1:P (e.g. top1:0.99 or top1:99%), got "${e}"`);
  }
  if (m[1] === 'top1') {
    if (v <= 0 || v > 1) throw new LrError('usage', '--max-error top1:P needs 0 < P <= 1 (or a percentage)');
    // First guess for the allocation's error budget; the search (error-search.ts) adjusts it.
    return { kind: 'error', err2: Math.max(2 * (1 - v), 1e-3), top1: v };
  }
  if (m[1] === 'cosine') {
    if (v <= 0 || v >= 1) throw new LrError('usage', '--max-error cosine:C needs 0 < C < 1');
    // For small errors 1 − cos ≈ ½‖Δy‖²/‖y‖².
    return { kind: 'error', err2: 2 * (1 - v), cosine: v };
  }
  if (v <= 0) throw new LrError('usage', '--max-error must be above 0');
  return { kind: 'error', err2: v * v };
}
