/**
 * inspect(): what a model is, which layers could be decomposed, and where its time goes
 * (`onnx-lr inspect`, which prints this result).
 */
import { Model } from '../graph/graph.js';
import { findLayers, findQuantizedLayers, type LayerInfo } from '../graph/layers.js';
import { findOtherWeights, type OtherWeight } from '../graph/other-weights.js';
import { shapesFor } from '../graph/layer-shapes.js';
import { roomOf, type Room } from '../graph/room.js';
import { summarize, type ModelSummary } from '../graph/summary.js';
import { loadModel } from '../onnx/file.js';
import { computesInFloat16, FLOAT16_NOTE } from '../rewrite/compute-float32.js';
import { narrowSites, sitesSummary } from '../rewrite/narrow-layout.js';
import { machineNchwcBlock, WIDEST_NCHWC_BLOCK } from '../verify/cpu-block.js';
import type { DefaultedDim, ShapeOverrides, ValueOverrides } from '../verify/inputs.js';
import { profileModel } from '../verify/profile.js';
import { findQdqLayers, qdqLayerNodes, storedType } from '../rewrite/quantize-inspect.js';
import { describeInput, withModelPath, type ModelInput } from './model-input.js';

/** What inspect says of narrow conv outputs ORT pads to its channel block (where this CPU has no blocked layout: of the widest, on x86-64). */
function narrowNote(model: Model): string | undefined {
  const block = machineNchwcBlock();
  const sites = narrowSites(model, block ?? WIDEST_NCHWC_BLOCK);
  if (sites.length === 0) return undefined;
  const s = sitesSummary(sites);
  const pads = block === undefined
    ? 'ONNX Runtime\'s CPU provider has no blocked conv layout on this CPU, but on x86-64 it pads them to 8 or 16 channels in one'
    : `ONNX Runtime's CPU provider pads them to ${s.padded} channels in its blocked layout`;
  return `${sites.length} conv(s) to ${s.channels} channel(s), read by ${s.readers}: ${pads}, and runs the ops that read them on the padding too; `
    + 'there `optimize` times a reorder out of that layout at each (exact) and keeps it when faster, `convert --narrow-reorder` applies it alone';
}

export interface InspectLayer {
  name: string;
  op: string;
  weightShape: number[];
  params: number;
  macs: number | null;
  where: string;
  subgraphDepth: number;
  /** The weight's stored type: fp32, fp16, bf16, "fp16 via Cast" (stored fp16, cast to float for the op). */
  stored: string;
}

/** A layer whose weight is stored quantized behind DequantizeLinear (weight-only QDQ): not decomposable, listed for what it stores. */
export interface InspectQuantizedLayer {
  name: string;
  op: string;
  weightShape: number[];
  params: number;
  macs: number | null;
  /** "int8 QDQ" (", cast to fp16" for an fp16 model's). */
  stored: string;
  subgraphDepth: number;
}

/** A node holding a constant weight that no layer is (an Einsum, a 3-D Gather table, an Add of a positional table…): listed with why no rewrite takes it. */
export type InspectOtherWeight = Omit<OtherWeight, 'weightName'>;

export interface InspectResult extends ModelSummary {
  file: string;
  bytes: number;
  layers: InspectLayer[];
  /** Layers with int8/uint8 weights behind DequantizeLinear (e.g. `optimize --weights int8` factors). */
  quantizedLayers: InspectQuantizedLayer[];
  /** Other nodes reading a float constant of two or more dims above 1: no rewrite applies (graph/other-weights.ts). */
  otherWeights: InspectOtherWeight[];
  shapeSource: 'ort-run' | 'declared';
  shapeNote?: string;
  defaultedDims: DefaultedDim[];
  /** Where the MACs and the time go by layer kind, and the speed-up bound that follows. */
  room: Room;
  /** Why the shares come from MACs instead of measured time. */
  roomNote?: string;
  /** Present when the model computes in float16: what `convert --compute float32` would do for CPU runtimes. */
  computeNote?: string;
  /** Present when a conv's output has at most half ORT's channel block and read by an op other than a conv (rewrite/narrow-layout.ts). */
  narrowNote?: string;
}

export interface InspectOptions {
  /** Concrete dims for dynamic inputs, e.g. { x: [1, 3, 640, 640] } (unnamed dynamic dims default to 1). */
  shapes?: ShapeOverrides;
  /** Fixed input values (e.g. a sample-rate scalar). */
  values?: ValueOverrides;
  /** Time every node in ORT (default true); false gives the shares by MACs. */
  profile?: boolean;
}

export function layerRows(layers: readonly LayerInfo[]): InspectLayer[] {
  return layers.map((l) => ({
    name: l.name, op: l.op, weightShape: l.weightShape, params: l.params, macs: l.macs ?? null,
    where: l.subgraphDepth > 0 ? `${l.where} (subgraph)` : l.where, subgraphDepth: l.subgraphDepth, stored: storedType(l),
  }));
}

/**
 * Inspects the .onnx file `file`, named `label` in the result. `feeds` gives the input
 * overrides once the model has loaded (the command line reads its --input files then).
 */
export async function inspectFile(
  file: string, label: string, feeds: () => { shapes: ShapeOverrides; values: ValueOverrides }, profile: boolean,
): Promise<InspectResult> {
  const loaded = loadModel(file);
  try {
    const model = new Model(loaded.model);
    const { shapes, values } = feeds();
    const sh = await shapesFor(loaded, model, shapes, values, qdqLayerNodes(model));
    const layers = findLayers(model, sh.shapes);
    let roomNote: string | undefined = 'not timed: --no-profile';
    let times;
    if (layers.length === 0) roomNote = 'no decomposable layers';
    else if (profile) {
      const t = await profileModel(loaded.path, { shapes, values });
      if (t.ok) { times = t.value; roomNote = undefined; } else roomNote = `profiling failed: ${t.error.message}`;
    }
    const narrow = narrowNote(model);
    return {
      file: label, bytes: loaded.byteSize, ...summarize(loaded.model, layers),
      layers: layerRows(layers),
      quantizedLayers: findQdqLayers(model, sh.shapes).map((q) => ({ ...q, macs: q.macs ?? null })),
      otherWeights: findOtherWeights(model, layers, new Set(findQuantizedLayers(model).map((q) => q.name)))
        .map((o) => ({ name: o.name, op: o.op, weightShape: o.weightShape, params: o.params, subgraphDepth: o.subgraphDepth, reason: o.reason })),
      shapeSource: sh.source, shapeNote: sh.note, defaultedDims: sh.defaulted,
      room: roomOf(layers, times), ...(roomNote && { roomNote }),
      ...(computesInFloat16(loaded.model) && { computeNote: FLOAT16_NOTE }),
      ...(narrow && { narrowNote: narrow }),
    };
  } finally {
    loaded.external.close();
  }
}

/** inspect() of a path or of a model's bytes. */
export function inspect(input: ModelInput, opts: InspectOptions = {}): Promise<InspectResult> {
  return withModelPath(input, (file) => inspectFile(file, describeInput(input), () => ({ shapes: opts.shapes ?? {}, values: opts.values ?? {} }), opts.profile !== false));
}
