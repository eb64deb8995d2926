/**
 * The inverse of a conv chain (for --stages, merge.ts): the single kernel a chain of convs
 * computes when at most one of them has a spatial window, as the conv passes emit
 * (1x1 SVD pairs, Tucker-2 and CP chains).
 */
import { attrInt } from '../graph/attrs.js';
import type { NodeProto } from '../onnx/schema.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import type { ChainFactor, FactoredLayer } from './pass.js';

/** A conv pass's `compose`: the chain's kernel in the original's grouped layout. */
export function composeConv(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext: ExternalBytes | undefined): Float32Array | string {
  return composeConvChain(chain, factors, f.weightDims, attrInt(f.original, 'group', 1), ext);
}

/**
 * The kernel of a chain of convs where at most one has a spatial window: each grouped
 * weight is expanded to a dense [out, in, K] block, the chain multiplied through, and the
 * result read back in the original's grouped layout [T, S/g, k…].
 */
export function composeConvChain(chain: readonly NodeProto[], factors: readonly ChainFactor[], dims: readonly number[], group: number, ext: ExternalBytes | undefined): Float32Array | string {
  let acc: { out: number; inp: number; K: number; data: Float64Array } | undefined;
  for (let i = 0; i < chain.length; i++) {
    const d = dense(factors[i]!, attrInt(chain[i]!, 'group', 1), ext);
    if (!acc) { acc = d; continue; }
    if (d.inp !== acc.out) return `chain convs do not connect (${acc.out} → ${d.inp} channels)`;
    if (d.K > 1 && acc.K > 1) return 'two convs of the chain have spatial windows';
    const K = Math.max(d.K, acc.K);
    const data = new Float64Array(d.out * acc.inp * K);
    for (let o = 0; o < d.out; o++) {
      for (let mid = 0; mid < d.inp; mid++) {
        for (let kp = 0; kp < K; kp++) {
          const x = d.data[(o * d.inp + mid) * d.K + (d.K > 1 ? kp : 0)]!;
          if (x === 0) continue;
          const base = (mid * acc.inp) * acc.K + (acc.K > 1 ? kp : 0);
          for (let s = 0; s < acc.inp; s++) data[(o * acc.inp + s) * K + kp] += x * acc.data[base + s * acc.K]!;
        }
      }
    }
    acc = { out: d.out, inp: acc.inp, K, data };
  }
  if (!acc) return 'empty chain';
  const [T, sPerGroup] = dims as [number, number];
  const K = dims.slice(2).reduce((a, b) => a * b, 1);
  if (acc.out !== T || acc.inp !== sPerGroup * group || (acc.K !== K && acc.K !== 1)) {
    return `chain kernel [${acc.out}, ${acc.inp}, ${acc.K}] does not fit weight [${dims.join(', ')}] with group ${group}`;
  }
  const w = new Float32Array(T * sPerGroup * K);
  const tPerGroup = T / group;
  for (let t = 0; t < T; t++) {
    const g0 = Math.floor(t / tPerGroup) * sPerGroup;
    for (let s = 0; s < sPerGroup; s++) {
      for (let kp = 0; kp < K; kp++) w[(t * sPerGroup + s) * K + kp] = acc.data[(t * acc.inp + g0 + s) * acc.K + (acc.K > 1 ? kp : 0)]!;
    }
  }
  return w;
}

/** A grouped conv weight [O, I/G, k…] as a dense [O, I, K] kernel (zeros outside the groups). */
function dense(f: ChainFactor, group: number, ext: ExternalBytes | undefined): { out: number; inp: number; K: number; data: Float64Array } {
  const [O, iPerGroup] = f.dims as [number, number];
  const K = f.dims.slice(2).reduce((a, b) => a * b, 1);
  const I = iPerGroup * group;
  const oPerGroup = O / group;
  const src = f.read(ext);
  const data = new Float64Array(O * I * K);
  for (let o = 0; o < O; o++) {
    const i0 = Math.floor(o / oPerGroup) * iPerGroup;
    for (let i = 0; i < iPerGroup; i++) for (let kp = 0; kp < K; kp++) data[(o * I + i0 + i) * K + kp] = src[(o * iPerGroup + i) * K + kp]!;
  }
  return { out: O, inp: I, K, data };
}
