/**
 * Per-layer latency: the original layer and its rewrite, each as a small model at the
 * layer's real input shape, timed interleaved in ORT with the chosen thread count.
 * Fewer MACs is not fewer milliseconds (depthwise and 1x1 convs are memory-bound): this
 * is what decides whether a rewrite is kept when latency matters.
 */
import { err, ok, type Result } from '../errors.js';
import type { Graph, Model } from '../graph/graph.js';
import { castFedConstant, computeElemType, type LayerInfo } from '../graph/layers.js';
import { resolveConstant } from '../graph/constants.js';
import type { ShapeMap } from '../graph/shapes.js';
import { encodeModel } from '../onnx/codec.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { tensorRawBytes } from '../onnx/tensor.js';
import { DataType, newGraph, newModel, newNode, newTensor, newValueInfo, type ModelProto, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { keptInside, openTimed } from '../verify/kept-outputs.js';
import { buildFeeds } from '../verify/inputs.js';
import { timeSessions } from '../verify/latency.js';
import type { Feeds } from '../verify/tensor.js';

/**
 * Nodes of `graph` cut out as a model computing `output`: values they read that are
 * constants become initializers (payload copied inline, so the model stands alone), the
 * others graph inputs at their known shapes. Constant nodes among them are folded away.
 */
export function nodesModel(model: Model, graph: Graph, nodes: readonly NodeProto[], output: string, elemType: number, shapes: ShapeMap, external?: ExternalBytes): ModelProto | string {
  const g = newGraph({ name: `${output} alone` });
  const isConstNode = (n: NodeProto): boolean => n.opType === 'Constant' && (n.domain ?? '') === '';
  const produced = new Set(nodes.filter((n) => !isConstNode(n)).flatMap((n) => n.output));
  const bound = new Set<string>();
  for (const n of nodes) {
    if (isConstNode(n)) continue;
    for (const v of n.input) {
      if (!v || produced.has(v) || bound.has(v)) continue;
      bound.add(v);
      const c = resolveConstant(graph, v);
      if (c) {
        g.initializer.push(newTensor({ name: v, dims: [...c.tensor.dims], dataType: c.tensor.dataType, rawData: tensorRawBytes(c.tensor, external) }) as TensorProto);
        continue;
      }
      // A constant behind a Cast (a bias stored fp16): the constant and its Cast come along.
      const cc = castFedConstant(graph, v);
      if (cc) {
        const src = cc.cast.node.input[0]!;
        g.initializer.push(newTensor({ name: src, dims: [...cc.ref.tensor.dims], dataType: cc.ref.tensor.dataType, rawData: tensorRawBytes(cc.ref.tensor, external) }) as TensorProto);
        g.node.unshift(newNode({ ...cc.cast.node, opType: 'Cast', input: [src], output: [v], attribute: cc.cast.node.attribute }));
        continue;
      }
      const dims = shapes.get(v);
      if (!dims) return `shape of ${v} unknown`;
      // Activations share the weight's float type (fp16 models run in fp16); integer inputs
      // (Gather indices, sequence_lens) keep their declared type, else ONNX's usual one.
      const type = declaredElemType(graph, v) ?? integerInputType(n, v) ?? elemType;
      g.input.push(newValueInfo({ name: v, type: { tensorType: { elemType: type, shape: { dim: dims.map((d) => ({ dimValue: d })) } } } }));
    }
    g.node.push(newNode({ ...n, opType: n.opType!, input: [...n.input], output: [...n.output], attribute: n.attribute }));
  }
  if (!produced.has(output)) return `${output} is not computed by the nodes`;
  g.output.push(newValueInfo({ name: output }));
  return newModel({ irVersion: Math.max(model.proto.irVersion ?? 8, 7), opsetImport: model.proto.opsetImport, graph: g });
}

/** The element type a value is declared with (graph input, value_info or output, enclosing graphs included). */
function declaredElemType(graph: Graph, v: string): number | undefined {
  for (let s: Graph | undefined = graph; s; s = s.parent) {
    for (const vi of [...s.proto.input, ...s.proto.valueInfo, ...s.proto.output]) {
      if (vi.name === v && vi.type?.tensorType?.elemType) return vi.type.tensorType.elemType;
    }
  }
  return undefined;
}

/** Inputs that are integers whatever the layer's float type: Gather's indices (int64), an RNN's sequence_lens (int32). */
function integerInputType(n: NodeProto, v: string): number | undefined {
  if (n.opType === 'Gather' && n.input[1] === v) return DataType.INT64;
  if (['LSTM', 'GRU', 'RNN'].includes(n.opType ?? '') && n.input[4] === v) return DataType.INT32;
  return undefined;
}

/** One layer as a model: its data inputs become graph inputs, its constants initializers. */
export function singleLayerModel(model: Model, layer: LayerInfo, shapes: ShapeMap, external?: ExternalBytes): ModelProto | string {
  const n = layer.node;
  // Only the first output: optional extra outputs (none on Conv/Gemm/MatMul today) are not timed.
  const node = newNode({ ...n, opType: n.opType!, output: [n.output[0]], attribute: n.attribute });
  // A weight stored fp16/bf16 is timed with its Cast, as the model runs it (and as the chain's factors are).
  const cast = layer.cast?.node;
  const nodes = cast ? [newNode({ ...cast, opType: 'Cast', output: [layer.cast!.value], attribute: cast.attribute }), node] : [node];
  return nodesModel(model, layer.graph, nodes, n.output[0], computeElemType(layer), shapes, external);
}

export interface LayerTiming { originalMs: number; candidateMs: number }

/** Times a layer against the chain that replaced it (default: timeRewrite; tests inject one that does not depend on machine speed). */
export type LayerTimer = (
  model: Model, layer: LayerInfo, chain: readonly NodeProto[], shapes: ShapeMap, opts: LayerTimerOptions,
) => Promise<Result<LayerTiming>>;

export interface LayerTimerOptions {
  threads: number;
  external?: ExternalBytes;
  /**
   * Timing inputs by the layer's input names and dims, reused across calls: the random
   * input of a layer at 1024² costs about a second to draw, once per candidate otherwise.
   */
  inputs?: Map<string, Feeds>;
}

const dimsText = (d: readonly number[] | undefined): string => (d ? d.join('x') : '?');

/**
 * What a chain's latency depends on: pass, ranks, op, attributes, weight, bias and input
 * shapes. Layers of one shape (repeated blocks) give one key, so a chain is timed once.
 */
export function chainKey(layer: LayerInfo, pass: string, ranks: readonly number[], shapes: ShapeMap): string {
  const attrs = layer.node.attribute.map((a) => `${a.name}=${a.i ?? ''}${a.ints.join(',')}${a.f ?? ''}${a.s ? new TextDecoder().decode(a.s) : ''}`);
  const inputs = layer.node.input.map((v, i) => (i === layer.weightInput ? `w${dimsText(layer.weightShape)}` : v ? dimsText(shapes.get(v)) : '-'));
  return JSON.stringify([pass, ranks, layer.op, layer.weight.tensor.dataType ?? 1, computeElemType(layer), attrs, inputs]);
}

/**
 * Times a layer against the chain that replaced it in the live graph (`chain`: the
 * nodes the rewrite added, which compute the layer's output), median ms of each over
 * interleaved runs. Read from the graph the trial wrote, so nothing is factorized twice.
 */
export async function timeRewrite(
  model: Model, layer: LayerInfo, chain: readonly NodeProto[], shapes: ShapeMap,
  opts: LayerTimerOptions,
): Promise<Result<LayerTiming>> {
  const rewritten = chainModel(model, layer, chain, shapes, opts.external);
  if (typeof rewritten === 'string') return err('unsupported', rewritten);
  const t = await timeChains(model, layer, [rewritten], shapes, opts);
  return t.ok ? ok({ originalMs: t.value.originalMs, candidateMs: t.value.candidateMs[0]! }) : t;
}

/** The chain that replaced a layer (the nodes the rewrite added) as a model of its own, to time later; why not when it cannot be cut out. */
export function chainModel(model: Model, layer: LayerInfo, chain: readonly NodeProto[], shapes: ShapeMap, external?: ExternalBytes): ModelProto | string {
  return nodesModel(model, layer.graph, chain, layer.node.output[0], computeElemType(layer), shapes, external);
}

/** Random values drawn per timing input; the rest repeat them (drawing 2^26 normals took a second per layer). */
const TIMING_PERIOD = 2 ** 16;

/** Times a layer against several candidate chains at once (default: timeChains; tests inject one that does not depend on machine speed). */
export type ChainsTimer = (
  model: Model, layer: LayerInfo, chains: readonly ModelProto[], shapes: ShapeMap, opts: LayerTimerOptions,
) => Promise<Result<{ originalMs: number; candidateMs: number[] }>>;

/**
 * A layer and candidate chains (chainModel), timed together: one session each, one
 * warm-up and one budget for all, interleaved in rounds (timeSessions), median ms of each.
 * A layer's rungs timed this way cost about what two pairs did, not one pair per rung.
 */
export async function timeChains(
  model: Model, layer: LayerInfo, chains: readonly ModelProto[], shapes: ShapeMap, opts: LayerTimerOptions,
): Promise<Result<{ originalMs: number; candidateMs: number[] }>> {
  const one = singleLayerModel(model, layer, shapes, opts.external);
  if (typeof one === 'string') return err('unsupported', one);
  const so = { intraOpNumThreads: opts.threads, graphOptimizationLevel: 'all' as const };
  // Outputs kept inside ORT (verify/kept-outputs.ts): at 512² copying them out cost more
  // than the conv. When ORT refuses a copy, every model of the loop is timed as it is.
  const models = [one, ...chains];
  const opened = await openTimed(models.map((m) => ({ bytes: encodeModel(keptInside(m)) })), () => models.map((m) => ({ bytes: encodeModel(m) })), so);
  if (!opened.ok) return opened;
  const sessions = opened.value.sessions;
  try {
    const key = JSON.stringify(sessions[0]!.inputs.map((i) => [i.name, i.type, i.shape]));
    let feeds = opts.inputs?.get(key);
    if (!feeds) {
      // Values repeated past 2^16 of them: a timing does not depend on them.
      const plan = buildFeeds(sessions[0]!.inputs, { seed: 0, period: TIMING_PERIOD });
      if (!plan.ok) return plan;
      feeds = plan.value.feeds[0]!;
      opts.inputs?.set(key, feeds);
    }
    // Slow layers (hundreds of ms at high resolution) stop after 2 s of timed runs for a
    // pair (half a second more per further chain), 5 rounds at least, and warm up for half
    // a second at most.
    const n = chains.length;
    const t = await timeSessions(sessions, {
      feeds, minRuns: 15, minSeconds: 0.075 * (n + 1), maxRuns: 2000, maxSeconds: 1.5 + 0.5 * n, fewestRuns: 5, warmupSeconds: 0.5,
    });
    return t.ok ? ok({ originalMs: t.value.ms[0]!.p50, candidateMs: t.value.ms.slice(1).map((p) => p.p50) }) : t;
  } finally {
    for (const s of sessions) await s.release();
  }
}
