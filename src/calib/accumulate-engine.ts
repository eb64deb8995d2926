/**
 * The conv accumulators of accumulate.ts with their Gram products on a GemmEngine.
 *
 * Why: at high resolution the patch Gram is the cost of calibration. A 128-channel 3x3
 * conv on a 512² map has 262k patches of 1152 values, 174 GMAC per sample: minutes in
 * plain JS (~1–1.5 GMAC/s), seconds in ORT's GEMM. Each block's B·Bᵀ runs in the
 * engine's precision (fp32 for fp32 activations, summing at most `width` products per
 * entry) and is added to the Float64 running sum, so rounding does not grow with the
 * number of blocks.
 */
import type { GemmEngine } from '../linalg/engine.js';
import {
  addBlockSums, channelBlocks, patchBlocks, patchDimOf, type FloatData, type PatchGeometry, type SampleBlock,
} from './accumulate.js';

/** Values per block buffer (16 MB as fp32): wide enough for the GEMM, small beside the activations. */
const BLOCK_VALUES = 4 * 2 ** 20;

const widthFor = (rows: number): number => Math.max(256, Math.min(65536, Math.floor(BLOCK_VALUES / Math.max(1, rows))));

async function addBlockGram(engine: GemmEngine, gram: Float64Array, gOff: number, b: SampleBlock): Promise<void> {
  const m = { rows: b.rows, cols: b.width, data: b.data };
  const p = (await engine.matmul(m, m, { transB: true })).data;
  for (let i = 0; i < p.length; i++) gram[gOff + i] += p[i]!;
}

/** accumulateConvChannels with the products on `engine` (same result up to rounding); `width`: positions per product. */
export async function accumulateConvChannelsOn(
  engine: GemmEngine, gram: Float64Array, x: FloatData, batch: number, channels: number, positions: number, groups: number, sum?: Float64Array,
  width = widthFor(channels / groups),
): Promise<number> {
  const s = channels / groups;
  for (const b of channelBlocks(x, batch, channels, positions, groups, width)) {
    await addBlockGram(engine, gram, b.group * s * s, b);
    if (sum) addBlockSums(sum, b.group * s, b);
  }
  return batch * positions;
}

/** accumulatePatches with the products on `engine` (same result up to rounding); `width`: patches per product. */
export async function accumulatePatchesOn(
  engine: GemmEngine, gram: Float64Array, x: FloatData, geo: PatchGeometry, sum?: Float64Array, width = widthFor(patchDimOf(geo)),
): Promise<number> {
  const D = patchDimOf(geo);
  for (const b of patchBlocks(x, geo, width)) {
    await addBlockGram(engine, gram, b.group * D * D, b);
    if (sum) addBlockSums(sum, b.group * D, b);
  }
  return geo.batch * geo.outSpatial.reduce((a, b) => a * b, 1);
}
