/**
 * A float32 copy of a model that computes in bfloat16, for ORT's CPU, which runs no bf16
 * MatMul, Gemm or Conv (ORT 1.30: "Could not find an implementation for MatMul(13)").
 * Used only to verify and time such a model (session.ts falls back to it when ORT refuses
 * the model as it is); the model written to OUT keeps its bf16 weights.
 *
 * Every bf16 tensor (initializers and attribute tensors, in every graph) becomes fp32 with
 * the same values (bf16 → fp32 is exact), every bf16 value type (inputs, outputs,
 * value_info, nested sequence/optional types) becomes fp32, and the attributes that name
 * a result type (Cast's `to`, `dtype` of EyeLike/Random*) are moved from bf16 to fp32. So
 * both IN and OUT compute in fp32 with their own bf16-rounded weights: the comparison
 * judges the rewrite, not bf16 arithmetic.
 */
import { DataType, type AttributeProto, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type TypeProto } from '../onnx/schema.js';
import { isExternal, makeFloatTensor, readTensorFloat } from '../onnx/tensor.js';
import { mapTensors } from '../onnx/walk.js';

/** Attributes whose int value is a data type, on default-domain ops. */
const TYPE_ATTRS = new Set(['to', 'dtype']);

/** The note a widened verification carries. */
export const WIDENED_NOTE = "bf16 model: ORT's CPU runs no bf16 MatMul, so IN and OUT were verified and timed through fp32 copies (weights cast up exactly); OUT keeps its bf16 weights";

function typeHoldsBf16(t: TypeProto | undefined): boolean {
  if (!t) return false;
  return t.tensorType?.elemType === DataType.BFLOAT16 || t.sparseTensorType?.elemType === DataType.BFLOAT16
    || typeHoldsBf16(t.sequenceType?.elemType) || typeHoldsBf16(t.optionalType?.elemType) || typeHoldsBf16(t.mapType?.valueType);
}

function widenType(t: TypeProto | undefined): void {
  if (!t) return;
  if (t.tensorType?.elemType === DataType.BFLOAT16) t.tensorType.elemType = DataType.FLOAT;
  if (t.sparseTensorType?.elemType === DataType.BFLOAT16) t.sparseTensorType.elemType = DataType.FLOAT;
  widenType(t.sequenceType?.elemType);
  widenType(t.optionalType?.elemType);
  widenType(t.mapType?.valueType);
}

/** Graphs of a model, subgraphs and function bodies included. */
function* graphsOf(g: GraphProto): Generator<GraphProto> {
  yield g;
  for (const n of g.node) for (const a of n.attribute) for (const sg of subgraphs(a)) yield* graphsOf(sg);
}

const subgraphs = (a: AttributeProto): GraphProto[] => [...(a.g ? [a.g] : []), ...a.graphs];

function* allGraphs(model: ModelProto): Generator<GraphProto> {
  if (model.graph) yield* graphsOf(model.graph);
  for (const f of model.functions) {
    for (const n of f.node) for (const a of n.attribute) for (const sg of subgraphs(a)) yield* graphsOf(sg);
  }
}

/** Whether anything in the model is bf16 (a tensor, a value type, a type attribute). */
export function holdsBf16(model: ModelProto): boolean {
  let found = false;
  mapTensors(model, (t) => { if (t.dataType === DataType.BFLOAT16) found = true; return t; });
  if (found) return true;
  for (const g of allGraphs(model)) {
    if ([...g.input, ...g.output, ...g.valueInfo].some((v) => typeHoldsBf16(v.type))) return true;
    if (g.node.some((n) => isTypeAttrNode(n.domain) && n.attribute.some((a) => TYPE_ATTRS.has(a.name ?? '') && Number(a.i) === DataType.BFLOAT16))) return true;
  }
  return false;
}

const isTypeAttrNode = (domain: string | undefined): boolean => (domain ?? '') === '' || domain === 'ai.onnx';

function widenTensor(t: TensorProto): TensorProto {
  if (t.dataType !== DataType.BFLOAT16) return t;
  const wide = makeFloatTensor(t.name ?? 'tensor', t.dims, readTensorFloat(t), DataType.FLOAT);
  const out: TensorProto = { ...t, dataType: DataType.FLOAT, rawData: wide.rawData };
  delete out.int32Data;
  return out;
}

/**
 * The fp32 copy of a model holding bf16, or why it cannot be made (bf16 data stored
 * outside the file). `model` is not modified.
 */
export function widenBf16(model: ModelProto): ModelProto | string {
  let external = '';
  const copy = mapTensors(model, (t) => {
    if (t.dataType !== DataType.BFLOAT16) return t;
    if (isExternal(t)) { external ||= t.name ?? 'a tensor'; return t; }
    return widenTensor(t);
  });
  if (external) return `bf16 tensor ${external} is stored as external data`;
  // mapTensors copied only the path to changed tensors: copy the graphs' value infos and
  // nodes' attributes before changing them, so `model` keeps its own.
  const out: ModelProto = structuredCloneTypes(copy);
  const widenNodes = (nodes: readonly NodeProto[]): void => {
    for (const n of nodes) {
      if (!isTypeAttrNode(n.domain)) continue;
      for (const a of n.attribute) if (TYPE_ATTRS.has(a.name ?? '') && Number(a.i) === DataType.BFLOAT16) a.i = BigInt(DataType.FLOAT);
    }
  };
  for (const g of allGraphs(out)) {
    for (const v of [...g.input, ...g.output, ...g.valueInfo]) widenType(v.type);
    widenNodes(g.node);
  }
  for (const f of out.functions) {
    for (const v of f.valueInfo) widenType(v.type);
    widenNodes(f.node);
  }
  return out;
}

/**
 * A copy of the model's graph structure (graphs, nodes, attributes, value infos) sharing
 * its tensors: the type edits above then touch only the copy.
 */
function structuredCloneTypes(model: ModelProto): ModelProto {
  const cloneGraph = (g: GraphProto): GraphProto => ({
    ...g,
    input: g.input.map((v) => ({ ...v, type: cloneType(v.type) })),
    output: g.output.map((v) => ({ ...v, type: cloneType(v.type) })),
    valueInfo: g.valueInfo.map((v) => ({ ...v, type: cloneType(v.type) })),
    node: g.node.map((n) => ({ ...n, attribute: n.attribute.map(cloneAttr) })),
  });
  const cloneAttr = (a: AttributeProto): AttributeProto => ({ ...a, ...(a.g ? { g: cloneGraph(a.g) } : {}), graphs: a.graphs.map(cloneGraph) });
  return {
    ...model,
    ...(model.graph ? { graph: cloneGraph(model.graph) } : {}),
    functions: model.functions.map((f) => ({
      ...f, valueInfo: f.valueInfo.map((v) => ({ ...v, type: cloneType(v.type) })), node: f.node.map((n) => ({ ...n, attribute: n.attribute.map(cloneAttr) })),
    })),
  };
}

function cloneType(t: TypeProto | undefined): TypeProto | undefined {
  if (!t) return t;
  return {
    ...t,
    ...(t.tensorType ? { tensorType: { ...t.tensorType } } : {}),
    ...(t.sparseTensorType ? { sparseTensorType: { ...t.sparseTensorType } } : {}),
    ...(t.sequenceType ? { sequenceType: { ...t.sequenceType, elemType: cloneType(t.sequenceType.elemType) } } : {}),
    ...(t.optionalType ? { optionalType: { ...t.optionalType, elemType: cloneType(t.optionalType.elemType) } } : {}),
    ...(t.mapType ? { mapType: { ...t.mapType, valueType: cloneType(t.mapType.valueType) } } : {}),
  };
}
