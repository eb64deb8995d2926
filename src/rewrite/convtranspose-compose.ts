/**
 * The inverse of a ConvTranspose chain (for --stages, merge.ts): the ConvTranspose weight
 * [S, T/g, k…] a chain of 1x1 Convs and at most one windowed node (a Conv or ConvTranspose)
 * computes, as the ConvTranspose passes emit.
 *
 * Channel mixing commutes with the window, so each node is one linear map per kernel tap:
 * a ConvTranspose factor [I, O/G, k…] is first rewritten in the Conv layout [O, I/G, k…]
 * (swapChannelRoles), the chain multiplied through as a Conv chain (conv-compose.ts), and
 * the product read back in the ConvTranspose layout.
 */
import { attrInt } from '../graph/attrs.js';
import type { NodeProto } from '../onnx/schema.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { composeConvChain } from './conv-compose.js';
import { swapChannelRoles } from './convtranspose-geometry.js';
import type { ChainFactor, FactoredLayer } from './pass.js';

/** A ConvTranspose pass's `compose`: the chain's kernel in the original's [S, T/g, k…] layout. */
export function composeConvTranspose(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext: ExternalBytes | undefined): Float32Array | string {
  if (chain.length !== factors.length) return 'chain and factors differ in length';
  const group = attrInt(f.original, 'group', 1);
  const [S, tPerGroup] = f.weightDims as [number, number];
  const taps = f.weightDims.slice(2);
  const K = taps.reduce((a, b) => a * b, 1);
  const asConv = factors.map((x, i): ChainFactor => {
    if (chain[i]!.opType !== 'ConvTranspose') return x;
    const g = attrInt(chain[i]!, 'group', 1);
    const [I, oPerGroup] = x.dims as [number, number];
    const k = x.dims.slice(2).reduce((a, b) => a * b, 1);
    return { ...x, dims: [oPerGroup * g, I / g, ...x.dims.slice(2)], read: (e) => swapChannelRoles(x.read(e), I, oPerGroup, k, g) };
  });
  const w = composeConvChain(chain, asConv, [tPerGroup * group, S / group, ...taps], group, ext);
  if (typeof w === 'string') return w;
  return swapChannelRoles(w, tPerGroup * group, S / group, K, group);
}
