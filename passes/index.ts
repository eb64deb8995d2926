/** Every rewrite, registered by name (the --passes / plan id). */
import type { LayerPass } from '../src/rewrite/pass.js';
import { convCp } from './conv-cp.js';
import { convTucker2 } from './conv-tucker2.js';
import { conv1x1Svd } from './conv1x1-svd.js';
import { gemmSvd } from './gemm-svd.js';
import { matmulSvd } from './matmul-svd.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyPass = LayerPass<any>;

export const PASSES: readonly AnyPass[] = [gemmSvd, matmulSvd, conv1x1Svd, convTucker2, convCp];

export function passByName(name: string): AnyPass | undefined {
  return PASSES.find((p) => p.name === name);
}
