/**
 * Per-layer latency: the original layer and a candidate chain, each as a one-layer model
 * at the layer's real input shape, timed interleaved in ORT with the chosen thread count.
 * Fewer MACs is not fewer milliseconds (depthwise and 1x1 convs are memory-bound): this
 * is what decides whether a rewrite is kept when latency matters.
 */
import type { SyncGemm } from '../linalg/engine.js';
import { err, ok, type Result } from '../errors.js';
import { Model } from '../graph/graph.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import { resolveConstant } from '../graph/constants.js';
import type { ShapeMap } from '../graph/shapes.js';
import { encodeModel } from '../onnx/codec.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { tensorRawBytes } from '../onnx/tensor.js';
import { newGraph, newModel, newNode, newTensor, newValueInfo, type ModelProto, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { isSkip, type PassContext } from '../rewrite/pass.js';
import { createRng } from '../util/rng.js';
import { timePair } from '../verify/latency.js';
import { createSession } from '../verify/session.js';
import type { AnyPass } from '../../passes/index.js';

/** One layer as a model: its data inputs become graph inputs, its constants initializers. */
export function singleLayerModel(model: Model, layer: LayerInfo, shapes: ShapeMap, external?: ExternalBytes): ModelProto | string {
  const n = layer.node;
  const g = newGraph({ name: `${layer.name} alone` });
  const inputs: string[] = [];
  for (const v of n.input) {
    if (!v) { inputs.push(''); continue; }
    const c = resolveConstant(layer.graph, v);
    if (c) {
      // The payload is copied inline so the one-layer model stands alone.
      const t: TensorProto = newTensor({ name: v, dims: [...c.tensor.dims], dataType: c.tensor.dataType, rawData: tensorRawBytes(c.tensor, external) });
      g.initializer.push(t);
    } else {
      const dims = shapes.get(v);
      if (!dims) return `shape of ${v} unknown`;
      // Activations share the weight's float type (fp16 models run in fp16).
      g.input.push(newValueInfo({ name: v, type: { tensorType: { elemType: layer.weight.tensor.dataType ?? 1, shape: { dim: dims.map((d) => ({ dimValue: d })) } } } }));
    }
    inputs.push(v);
  }
  const copy: NodeProto = newNode({ ...n, opType: n.opType!, input: inputs, output: [n.output[0]], attribute: n.attribute });
  g.node.push(copy);
  g.output.push(newValueInfo({ name: n.output[0] }));
  return newModel({ irVersion: Math.max(model.proto.irVersion ?? 8, 7), opsetImport: model.proto.opsetImport, graph: g });
}

export interface LayerTiming { originalMs: number; candidateMs: number }

/** Times a layer against its rewrite at `ranks` (median ms of each, interleaved runs). */
export async function timeCandidate(
  model: Model, layer: LayerInfo, pass: AnyPass, ranks: readonly number[], shapes: ShapeMap,
  opts: { threads: number; external?: ExternalBytes; seed: number; gemm?: SyncGemm },
): Promise<Result<LayerTiming>> {
  const one = singleLayerModel(model, layer, shapes, opts.external);
  if (typeof one === 'string') return err('unsupported', one);
  const originalBytes = encodeModel(one);
  const m2 = new Model(one);
  const l2 = findLayers(m2, shapes)[0];
  if (!l2) return err('unsupported', 'layer not found in its one-layer model');
  const cx: PassContext = { model: m2, rng: createRng(opts.seed), shared: new Map(), gemm: opts.gemm };
  const mm = pass.match(l2, cx);
  if (isSkip(mm)) return err('unsupported', mm.skip);
  const applied = pass.apply(mm, ranks, cx);
  if (isSkip(applied)) return err('unsupported', applied.skip);
  m2.root.removeUnusedInitializers();
  const so = { intraOpNumThreads: opts.threads, graphOptimizationLevel: 'all' as const };
  const a = await createSession({ bytes: originalBytes }, so);
  if (!a.ok) return a;
  const b = await createSession({ bytes: encodeModel(m2.proto) }, so);
  if (!b.ok) { await a.value.release(); return b; }
  try {
    const t = await timePair(a.value, b.value, { minRuns: 15, minSeconds: 0.15, maxRuns: 2000 });
    return t.ok ? ok({ originalMs: t.value.originalMs.p50, candidateMs: t.value.optimizedMs.p50 }) : t;
  } finally {
    await a.value.release();
    await b.value.release();
  }
}
