/**
 * Where a conv's receptive fields lie on its input (for patch statistics, see
 * sample-blocks.ts), and a ConvTranspose's scatter patches (rewrite/convtranspose-patches.ts).
 */
import type { ConvTransposeGeometry } from '../rewrite/convtranspose-geometry.js';
import { scatterPlacement } from '../rewrite/convtranspose-patches.js';

/**
 * Everything that places a conv's receptive fields on its input, with auto_pad resolved.
 * `padsBegin` are the pads before each spatial axis (the end pads only matter through
 * `outSpatial`).
 */
export interface PatchGeometry {
  batch: number;
  channels: number;
  groups: number;
  inSpatial: number[];
  kernel: number[];
  strides: number[];
  dilations: number[];
  padsBegin: number[];
  outSpatial: number[];
  /**
   * A ConvTranspose's scatter patches instead of a Conv's im2col patches: the output at o
   * reads tap κ from input (o + padsBegin − κ·dilation)/stride when that is an integer in
   * range (outSpatial and padsBegin are then the ConvTranspose's output extent and pads).
   */
  transposed?: boolean;
}

/** Size of one group's patch vector: (channels/groups)·∏kernel. */
export const patchDimOf = (g: { channels: number; groups: number; kernel: readonly number[] }): number =>
  (g.channels / g.groups) * g.kernel.reduce((a, b) => a * b, 1);

/** The subset of a Conv's attributes (see rewrite/conv-geometry.ts) that places its windows. */
export interface ConvPlacement {
  kernel: readonly number[];
  strides: readonly number[];
  dilations: readonly number[];
  /** [begin…, end…] */
  pads: readonly number[];
  autoPad: 'NOTSET' | 'SAME_UPPER' | 'SAME_LOWER' | 'VALID';
  /** Input channels. */
  S: number;
  group: number;
}

/**
 * Resolves a conv's placement on an input of dims [N, S, spatial…] the way ONNX Runtime
 * does (auto_pad SAME_* pads to ceil(in/stride) outputs, the odd pixel at the end for
 * SAME_UPPER and at the start for SAME_LOWER). Returns a reason string when the input
 * does not fit.
 */
export function resolvePatchGeometry(conv: ConvPlacement, inputDims: readonly number[]): PatchGeometry | string {
  const sp = conv.kernel.length;
  if (inputDims.length !== sp + 2) return `input has dims [${inputDims.join(', ')}], expected rank ${sp + 2}`;
  const [batch, channels] = inputDims as [number, number];
  if (channels !== conv.S) return `input has ${channels} channels, the weight expects ${conv.S}`;
  const inSpatial = inputDims.slice(2);
  const padsBegin: number[] = [];
  const outSpatial: number[] = [];
  for (let a = 0; a < sp; a++) {
    const inp = inSpatial[a]!, k = conv.kernel[a]!, s = conv.strides[a]!, d = conv.dilations[a]!;
    const span = (k - 1) * d + 1;
    let begin: number, out: number;
    if (conv.autoPad === 'SAME_UPPER' || conv.autoPad === 'SAME_LOWER') {
      out = Math.ceil(inp / s);
      const total = Math.max(0, (out - 1) * s + span - inp);
      begin = conv.autoPad === 'SAME_UPPER' ? Math.floor(total / 2) : total - Math.floor(total / 2);
    } else if (conv.autoPad === 'VALID') {
      begin = 0;
      out = Math.floor((inp - span) / s) + 1;
    } else {
      begin = conv.pads[a]!;
      out = Math.floor((inp + begin + conv.pads[a + sp]! - span) / s) + 1;
    }
    if (out < 1) return `the kernel does not fit the input on spatial axis ${a} (${inp})`;
    padsBegin.push(begin);
    outSpatial.push(out);
  }
  return {
    batch, channels, groups: conv.group, inSpatial, kernel: [...conv.kernel], strides: [...conv.strides],
    dilations: [...conv.dilations], padsBegin, outSpatial,
  };
}

/**
 * The scatter-patch geometry of a ConvTranspose on an input of dims [N, S, spatial…]
 * (output extent and pads as ONNX Runtime places them, convtranspose-patches.ts
 * scatterPlacement), or why the input does not fit.
 */
export function resolveScatterGeometry(ct: ConvTransposeGeometry, inputDims: readonly number[]): PatchGeometry | string {
  if (inputDims.length !== ct.spatial + 2) return `input has dims [${inputDims.join(', ')}], expected rank ${ct.spatial + 2}`;
  const [batch, channels] = inputDims as [number, number];
  if (channels !== ct.S) return `input has ${channels} channels, the weight expects ${ct.S}`;
  const inSpatial = inputDims.slice(2);
  const place = scatterPlacement(ct, inSpatial);
  if (typeof place === 'string') return place;
  if (place.outDims.some((d) => d < 1)) return `the ConvTranspose's output extent [${place.outDims.join(', ')}] is empty`;
  return {
    batch, channels, groups: ct.group, inSpatial, kernel: [...ct.kernel], strides: [...ct.strides],
    dilations: [...ct.dilations], padsBegin: place.padBegin, outSpatial: place.outDims, transposed: true,
  };
}

/** How a conv-kind statistic reads one input: its channel vectors, and the patches of its patch statistics. */
export interface InputGeometry { channels: PatchGeometry; patches: PatchGeometry }

/**
 * Resolves both: a Conv's patches are its own receptive fields; with `scatter` (a
 * ConvTranspose, whose channel statistic is placed as a 1x1 conv in `conv`) they are the
 * ConvTranspose's scatter patches.
 */
export function resolveInputGeometry(conv: ConvPlacement, scatter: ConvTransposeGeometry | undefined, inputDims: readonly number[]): InputGeometry | string {
  const channels = resolvePatchGeometry(conv, inputDims);
  if (typeof channels === 'string' || !scatter) return typeof channels === 'string' ? channels : { channels, patches: channels };
  const patches = resolveScatterGeometry(scatter, inputDims);
  return typeof patches === 'string' ? patches : { channels, patches };
}
