/**
 * Dispatch through the registry (ORT's TargetOpTypes, MLIR's root op and benefit): the
 * passes that may rewrite a layer are those whose `ops` hold its op type, whose `method`
 * is the one asked for (any under auto) and whose `accepts` takes it, the preferred
 * (highest `benefit`) first. `bind` closes a pass over its match, so no caller holds a
 * match of unknown type. The list itself is passes/index.ts (one line per pass), ordered
 * into PASSES by passes/dispatch.ts.
 */
import type { LayerInfo } from '../graph/layers.js';
import {
  isSkip, paysInParamsAndMacs, type BoundPass, type LayerPass, type LayerRewrite, type PassContext, type Skip,
} from './pass.js';

/** Any registered pass, its match type hidden (bind recovers it). */
export type Pass = LayerPass<unknown>;

/** The method choice that lets every pass compete, the preferred one first. */
export const AUTO = 'auto';

/** Why a layer no pass takes is left alone, where its op type alone does not say it well. */
const NOT_YET: Readonly<Record<string, string>> = {};

/** The `method` values of the passes, each once, in registry order. */
export function methodsOf(passes: readonly Pass[]): string[] {
  return [...new Set(passes.map((p) => p.method))];
}

/**
 * The passes that may rewrite a layer under a method choice, preferred first (ties keep
 * registry order), or why none may.
 */
export function route(passes: readonly Pass[], layer: LayerInfo, method: string): Pass[] | string {
  const forOp = passes.filter((p) => p.ops.includes(layer.op));
  if (forOp.length === 0) return NOT_YET[layer.op] ?? `${layer.op} is not decomposed yet`;
  const asked = method === AUTO ? forOp : forOp.filter((p) => p.method === method);
  if (asked.length === 0) return `--method ${method} does not apply to ${layer.op}`;
  const declined: { pass: Pass; skip: Skip }[] = [];
  const taken = asked.filter((p) => {
    const a = p.accepts?.(layer) ?? true;
    if (a !== true) declined.push({ pass: p, skip: a });
    return a === true;
  });
  if (taken.length === 0) {
    const d = declined[0]!;
    return method === AUTO ? `${d.pass.name} ${d.skip.skip}` : `--method ${method} ${d.skip.skip}`;
  }
  // Array.prototype.sort is stable: equal benefits keep registry order.
  return taken.sort((a, b) => b.benefit - a.benefit);
}

/** The preferred pass for a layer under a method choice, or why there is none. */
export function preferredPass(passes: readonly Pass[], layer: LayerInfo, method: string): Pass | string {
  const r = route(passes, layer, method);
  return typeof r === 'string' ? r : r[0]!;
}

/** Matches the layer and binds the pass to the match; the Skip when it declines. May throw (an unreadable weight). */
export function bind<M>(pass: LayerRewrite<M>, layer: LayerInfo, cx: PassContext): BoundPass | Skip {
  const m = pass.match(layer, cx);
  return isSkip(m) ? m : bound(pass, m);
}

/** A pass bound to a match it made. */
export function bound<M>(pass: LayerRewrite<M>, m: M): BoundPass {
  const estimate = pass.estimate;
  return {
    name: pass.name,
    method: pass.method,
    chooseRanks: (policy) => pass.chooseRanks(m, policy),
    cost: (ranks) => pass.cost(m, ranks),
    pays: (c) => (pass.pays ? pass.pays(c) : paysInParamsAndMacs(c)),
    apply: (ranks, cx) => pass.apply(m, ranks, cx),
    estimate: estimate && ((ranks, cx) => estimate.call(pass, m, ranks, cx)),
    fitWork: (ranks) => pass.fitWork?.(m, ranks) ?? 0,
    rankProblem: (ranks) => rankProblem(pass, m, ranks),
  };
}

/** Why ranks do not fit a matched layer: count, positive integers within rankLimits, then the pass's own checkRanks. */
function rankProblem<M>(pass: LayerRewrite<M>, m: M, ranks: readonly number[]): string | undefined {
  const limits = pass.rankLimits(m);
  const names = pass.rankNames ?? (limits.length === 1 ? ['rank'] : limits.map((_, i) => `rank ${i + 1}`));
  if (ranks.length !== limits.length) return `${ranks.length} rank(s) [${ranks.join(', ')}], but ${pass.name} takes ${limits.length}`;
  for (let i = 0; i < limits.length; i++) {
    const r = ranks[i]!;
    if (!Number.isSafeInteger(r) || r < 1 || r > limits[i]!) return `${names[i]} ${r} is out of range: valid ranks are 1 to ${limits[i]}`;
  }
  return pass.checkRanks?.(m, ranks);
}
