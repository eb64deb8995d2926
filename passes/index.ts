/**
 * Every rewrite, registered: dispatch (src/rewrite/registry.ts) routes each layer to the
 * passes whose `ops` and `accepts` take it, the highest `benefit` first, and --method's
 * choices are the passes' `method` values. Adding a pass is its file, two lines here (its
 * import and its entry in PASSES), and its test.
 */
import type { LayerInfo } from '../src/graph/layers.js';
import { castAware } from '../src/rewrite/cast-weights.js';
import { AUTO, methodsOf, preferredPass, route, type Pass } from '../src/rewrite/registry.js';
import { convCp } from './conv-cp.js';
import { convCp4 } from './conv-cp4.js';
import { convSpatialSvd } from './conv-spatial-svd.js';
import { convTt } from './conv-tt.js';
import { convTucker2 } from './conv-tucker2.js';
import { conv1x1Svd } from './conv1x1-svd.js';
import { convTransposeSvd } from './convtranspose-svd.js';
import { convTransposeTucker2 } from './convtranspose-tucker2.js';
import { gatherSvd } from './gather-svd.js';
import { gemmSvd } from './gemm-svd.js';
import { matmulBatchedSvd } from './matmul-batched-svd.js';
import { matmulSvd } from './matmul-svd.js';
import { rnnInputSvd } from './rnn-input-svd.js';

const REGISTERED = [
  gemmSvd,
  matmulSvd,
  conv1x1Svd,
  convTucker2,
  convCp,
  convSpatialSvd,
  convTt,
  convTransposeTucker2,
  convTransposeSvd,
  convCp4,
  gatherSvd,
  rnnInputSvd,
  matmulBatchedSvd,
] as const;

/** Every pass handles weights stored fp16/bf16 behind a Cast (cast-weights.ts; a no-op on other layers). */
export const PASSES: readonly Pass[] = REGISTERED.map((p) => castAware<unknown, string>(p as Pass));

/** A --method value: one of the passes' methods. */
export type Method = (typeof REGISTERED)[number]['method'];
export type MethodChoice = typeof AUTO | Method;

/** --method's choices, auto first, then each pass's method once in registry order. */
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
