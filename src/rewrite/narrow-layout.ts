/**
 * Narrow conv outputs taken out of ONNX Runtime's blocked layout right after the conv.
 *
 * Why: ORT's CPU provider runs 2-D convs in a blocked layout (NCHWc: channels in blocks of
 * 8, or 16 with AVX-512) and pads a conv's output channels up to the block. The ops that
 * read it and have blocked kernels (Resize/Upsample, activations, Add, pooling) then run
 * on the padded channels too, until the layout is reordered back. A segmentation head
 * (a conv to 1 channel, Resize ×4 to full resolution, Sigmoid) thus computes 16 channels
 * of which 15 are padding: on ISNet its six heads took ~110 ms of 520 ms after low-rank
 * rewrites, ~10 ms once reordered at the conv. A Reshape to the same shape has no blocked
 * kernel, so ORT reorders at the conv's output (where the map is smallest) and the readers
 * run on the real channels.
 *
 * Before: y = g(Conv(x, W)), W: [C, …, kh, kw] with C ≤ block / 2;  readers f(y)
 * After:  y = g(Conv(x, W));  y' = Reshape(y, [0, 0, 0, 0]) = y;  readers f(y')
 * where g is the run of ops ORT fuses into a conv (BatchNormalization, an activation),
 * each the only reader of what it reads: the Reshape goes after them, so it blocks no
 * fusion.
 *
 * Exact (a Reshape to the same shape; `0` copies each dim). Only where at least half the
 * block would be padding and some reader is not a Conv (a blocked conv reads a narrow NCHW
 * input directly); main graph only. Whether it pays is measured on the whole model in ORT
 * (optimize/narrow-reorder.ts): the reorder moves, it does not vanish.
 */
import type { Graph, Model } from '../graph/graph.js';
import { findLayers } from '../graph/layers.js';
import { newNode } from '../onnx/schema.js';
import { makeInt64Tensor } from '../onnx/tensor.js';

/** Reshape's shape became an input in opset 5. */
const MIN_OPSET = 5;

export interface NarrowSite {
  /** The conv node's name (or its output's, when unnamed). */
  conv: string;
  /** The value the readers get through the Reshape: the conv's output, or the end of the ops fused into it. */
  value: string;
  /** Output channels, and what ORT's blocked layout pads them to. */
  channels: number;
  padded: number;
  /** The op types reading the value, for the report. */
  readers: string[];
}

/** The 2-D convs of the main graph whose outputs the blocked layout pads at least twofold, read by some op other than a Conv. */
export function narrowSites(model: Model, block: number): NarrowSite[] {
  if ((model.opsetVersion('') ?? 0) < MIN_OPSET || block <= 1) return [];
  const g = model.root;
  const sites: NarrowSite[] = [];
  for (const l of findLayers(model)) {
    if (l.graph !== g || l.op !== 'Conv' || l.weightShape.length !== 4) continue;
    const channels = l.weightShape[0]!;
    const padded = Math.ceil(channels / block) * block;
    const value = l.node.output[0] && fusedEnd(g, l.node.output[0]);
    if (channels < 1 || padded < 2 * channels || !value) continue;
    // A barrier already there (OUT of an earlier run) leaves nothing to move.
    const readers = g.consumers(value).filter((c) => c.input.includes(value) && !isBarrier(c));
    if (readers.length === 0 || readers.every((c) => c.opType === 'Conv' && (c.domain ?? '') === '')) continue;
    sites.push({ conv: l.name, value, channels, padded, readers: [...new Set(readers.map((c) => c.opType ?? '?'))] });
  }
  return sites;
}

const distinct = <T>(xs: readonly T[]): T[] => [...new Set(xs)];

/** The sites' channel counts, padded widths and readers' op types, each distinct, for messages. */
export function sitesSummary(sites: readonly Pick<NarrowSite, 'channels' | 'padded' | 'readers'>[]): { channels: string; padded: string; readers: string } {
  const up = (a: number, b: number): number => a - b;
  return {
    channels: distinct(sites.map((x) => x.channels)).sort(up).join('/'),
    padded: distinct(sites.map((x) => x.padded)).sort(up).join('/'),
    readers: distinct(sites.flatMap((x) => x.readers)).join(', '),
  };
}

/** Ops ORT fuses into the conv before them (conv_bn_fusion, conv_activation_fusion). */
const FUSED_INTO_CONV = new Set(['BatchNormalization', 'Relu', 'LeakyRelu', 'Sigmoid', 'Tanh', 'Clip', 'HardSigmoid']);

/** Follows `v` through the ops fused into the conv that made it, while each is the only reader and no graph output intervenes. */
function fusedEnd(g: Graph, v: string): string {
  for (;;) {
    const readers = g.consumers(v);
    const next = readers[0];
    if (readers.length !== 1 || g.isGraphOutput(v) || !next || (next.domain ?? '') !== '' || !FUSED_INTO_CONV.has(next.opType ?? '') || next.input[0] !== v || !next.output[0]) return v;
    v = next.output[0];
  }
}

/**
 * Puts a same-shape Reshape between each site's value and its readers, in place. Sites
 * whose value is gone or already behind a barrier are skipped. Returns how many were put in.
 */
export function insertLayoutBarriers(model: Model, sites: readonly NarrowSite[]): number {
  const g = model.root;
  let shape: string | undefined;
  let n = 0;
  for (const s of sites) {
    const producer = g.producer(s.value);
    if (!producer) continue;
    const readers = g.consumers(s.value).filter((c) => c.input.includes(s.value) && !isBarrier(c));
    if (readers.length === 0) continue;
    shape ??= addShape(model, g);
    const out = model.uniqueName(`${s.value}_nchw`);
    const reshape = newNode({ opType: 'Reshape', name: model.uniqueName(`${s.conv}_nchw`), input: [s.value, shape], output: [out], domain: '' });
    for (const r of readers) r.input = r.input.map((v) => (v === s.value ? out : v));
    // Right after what makes the value: as topological as the graph was.
    g.insertAfter(producer, [reshape]);
    n++;
  }
  return n;
}

const BARRIER_TAG = 'onnx-lr.layout_barrier';

function isBarrier(n: { opType?: string; input: readonly string[] }): boolean {
  return n.opType === 'Reshape' && (n.input[1] ?? '').startsWith(BARRIER_TAG);
}

function addShape(model: Model, g: Graph): string {
  const name = model.uniqueName(BARRIER_TAG);
  g.addInitializer(makeInt64Tensor(name, [4], [0, 0, 0, 0]));
  return name;
}
