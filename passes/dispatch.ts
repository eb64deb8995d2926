/**
 * Dispatch over the registered passes (index.ts, one line each): each layer goes to the
 * passes whose `ops` and `accepts` take it, the highest `benefit` first
 * (src/rewrite/registry.ts), and --method's choices are the passes' `method` values.
 */
import type { LayerInfo } from '../src/graph/layers.js';
import { castAware } from '../src/rewrite/cast-weights.js';
import { AUTO, methodsOf, preferredPass, route, type Pass } from '../src/rewrite/registry.js';
import * as registered from './index.js';

/**
 * The registered passes, the preferred (highest `benefit`) first and by method name
 * between equals, so the order (and --method's list) never depends on how the lines of
 * index.ts are sorted.
 */
const byText = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);
const REGISTERED = (Object.values(registered) as Pass[]).sort((a, b) => b.benefit - a.benefit || byText(a.method, b.method) || byText(a.name, b.name));

/** Every pass handles weights stored fp16/bf16 behind a Cast (cast-weights.ts; a no-op on other layers). */
export const PASSES: readonly Pass[] = REGISTERED.map((p) => castAware<unknown, string>(p));

/** A --method value: one of the passes' methods. */
export type Method = (typeof registered)[keyof typeof registered]['method'];
export type MethodChoice = typeof AUTO | Method;

/** --method's choices, auto first, then each pass's method once, the preferred first. */
export const METHOD_CHOICES = [AUTO, ...methodsOf(PASSES)] as readonly MethodChoice[];

export type { Pass };

export function passByName(name: string): Pass | undefined {
  return PASSES.find((p) => p.name === name);
}

/** The preferred pass for a layer under a method choice, or why there is none. */
export function passFor(layer: LayerInfo, method: MethodChoice): Pass | string {
  return preferredPass(PASSES, layer, method);
}

/** Every pass that may rewrite a layer under a method choice, preferred first, or why none may. */
export function passesFor(layer: LayerInfo, method: MethodChoice): Pass[] | string {
  return route(PASSES, layer, method);
}
