/**
 * A float16 graph made to compute in float32, its constants still stored in float16
 * (`onnx-lr convert --compute float32`).
 *
 * Why: ONNX Runtime's CPU provider (and its wasm build) has float16 kernels for few ops
 * (Concat, MaxPool, …) and none for Conv, so in a float16 graph it computes each conv in
 * float32 behind Casts it inserts, and its blocked conv layout is reordered in and out at
 * every such boundary. On ISNet (a float16 graph, float32 I/O) those Casts and reorders
 * took about 750 ms of 2.5 s; in float32 the model runs 1.10× faster, and 1.21× after
 * low-rank rewrites, whose chains add convs (docs/results.md). Where float16 kernels
 * exist (GPUs, NPUs), keep the float16 graph.
 *
 * Before: C₁₆ (initializer or Constant) → Op(x₁₆, C₁₆) → y₁₆;  Cast(to FLOAT16);  values typed float16
 * After:  C₁₆ → Cast(to FLOAT) → Op(x₃₂, C₃₂) → y₃₂;  Cast(to FLOAT);  values typed float32
 * Float16 graph inputs and outputs keep their type behind a new Cast; a ConstantOfShape's
 * float16 value and the float16 `dtype` of random/eye generators become float32. Stored
 * constants are not widened (the file keeps its size; ORT folds their Casts at load, as it
 * does for the Casts it inserts today). Refused (nothing changed) where the types cannot be
 * followed: subgraphs, model-local functions, operators outside the ONNX domain, float16
 * sparse constants.
 */
import { LrError } from '../errors.js';
import { AttributeType, DataType, newAttribute, newNode, type GraphProto, type ModelProto, type NodeProto, type ValueInfoProto } from '../onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../onnx/tensor.js';
import { freshName, namesOf } from '../onnx/names.js';

/** Said of a float16 graph: on CPU runtimes computing it in float32 is faster, and low-rank chains gain more there. */
export const FLOAT16_NOTE = 'this model computes in float16, which ONNX Runtime\'s CPU and wasm builds run in float32 behind Casts and layout reorders of their own; '
  + 'for those runtimes `onnx-lr optimize --compute float32` (or `onnx-lr convert IN OUT --compute float32`) removes them (constants stay float16): ISNet ran 1.09x faster so, and 1.21x after low-rank rewrites';

/** Operators whose `dtype` attribute is the output's element type. */
const DTYPE_OPS = new Set(['EyeLike', 'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Bernoulli']);

export interface Float32Compute {
  /** Float16 constants (initializers, Constant outputs) now read through a Cast to float. */
  constants: number;
  /** Cast nodes retargeted from float16 to float. */
  casts: number;
  /** Intermediate values whose declared type went from float16 to float. */
  values: number;
  /** Graph inputs and outputs kept float16 behind a new Cast. */
  boundaries: number;
  /** ConstantOfShape values and dtype attributes changed. */
  attributes: number;
}

/** What a conversion changed, in words (convert's line, optimize --compute's note). */
export function float32Changes(c: Float32Compute): string {
  return `${c.constants} float16 constants read through a Cast, ${c.casts} Casts to float16 now to float, ${c.values} value types float32, ${c.boundaries} float16 graph inputs/outputs behind a Cast, ${c.attributes} attributes`;
}

const isOnnxDomain = (n: NodeProto): boolean => (n.domain ?? '') === '' || n.domain === 'ai.onnx';
const castTo = (n: NodeProto): number | undefined => (n.opType === 'Cast' && isOnnxDomain(n) ? Number(n.attribute.find((a) => a.name === 'to')?.i ?? -1) : undefined);
const elemType = (v: ValueInfoProto): number | undefined => v.type?.tensorType?.elemType;
const label = (n: NodeProto): string => `node "${n.name || n.output[0] || ''}" (${n.opType})`;

/**
 * True when the graph computes in float16 (what convert --compute float32 would change):
 * float16 intermediate values, Casts to float16 inside the graph, or ops other than Cast
 * reading float16 constants or inputs. Float16 graph inputs and outputs behind a Cast are
 * an interface, not computation (a converted model says false).
 */
export function computesInFloat16(model: ModelProto): boolean {
  const g = model.graph;
  if (!g) return false;
  if (g.valueInfo.some((v) => elemType(v) === DataType.FLOAT16)) return true;
  const halfOutputs = new Set(g.output.filter((v) => elemType(v) === DataType.FLOAT16).map((v) => v.name!));
  const read = new Set([...float16Constants(g), ...g.input.filter((v) => elemType(v) === DataType.FLOAT16).map((v) => v.name!)]);
  return g.node.some((n) => {
    const to = castTo(n);
    if (to !== undefined) return to === DataType.FLOAT16 && !halfOutputs.has(n.output[0]!);
    if (n.input.some((i) => read.has(i))) return true;
    return n.opType !== 'Constant' && n.output.some((o) => halfOutputs.has(o));
  });
}

/** Names of the float16 initializers and Constant outputs. */
function float16Constants(g: GraphProto): Set<string> {
  const out = new Set<string>();
  for (const t of g.initializer) if (t.dataType === DataType.FLOAT16 && t.name) out.add(t.name);
  for (const n of g.node) {
    if (n.opType !== 'Constant' || !isOnnxDomain(n)) continue;
    if (n.attribute.some((a) => a.name === 'value' && a.t?.dataType === DataType.FLOAT16)) out.add(n.output[0]!);
  }
  return out;
}

/** Why the model cannot be converted, or undefined. */
function refusal(model: ModelProto): string | undefined {
  const g = model.graph!;
  if (model.functions.length > 0) return `the model defines ${model.functions.length} local function(s), whose types onnx-lr does not follow`;
  if (g.sparseInitializer.some((s) => s.values?.dataType === DataType.FLOAT16)) return 'a float16 sparse initializer (not converted)';
  for (const n of g.node) {
    if (n.attribute.some((a) => a.g || a.graphs.length > 0)) return `${label(n)} has a subgraph, whose types onnx-lr does not follow`;
    if (!isOnnxDomain(n)) return `${label(n)} is in domain "${n.domain}", whose type constraints onnx-lr does not know`;
    if (n.opType === 'Constant' && n.attribute.some((a) => a.name === 'sparse_value' && a.sparseTensor?.values?.dataType === DataType.FLOAT16)) return `${label(n)} holds a float16 sparse value`;
  }
  return undefined;
}

/**
 * Converts `model` in place (see the file comment); returns what changed. Throws
 * LrError('unsupported') before changing anything when the model cannot be converted.
 */
export function computeInFloat32(model: ModelProto): Float32Compute {
  const g = model.graph;
  if (!g) throw new LrError('parse', 'the model has no graph');
  const why = refusal(model);
  if (why) throw new LrError('unsupported', `cannot compute in float32: ${why}`);
  const stats: Float32Compute = { constants: 0, casts: 0, values: 0, boundaries: 0, attributes: 0 };
  const taken = namesOf(g);
  const fresh = (base: string): string => freshName(taken, `${base}_f32`);
  const cast = (from: string, to: string, type: number): NodeProto =>
    newNode({ opType: 'Cast', name: fresh(`${to}_cast`), input: [from], output: [to], attribute: [newAttribute({ name: 'to', type: AttributeType.INT, i: BigInt(type) })] });
  /** Every node input reading `from` (but Casts of it, when `keepCasts`) reads `to` instead. */
  const rewire = (from: string, to: string, keepCasts: boolean): number => {
    let n = 0;
    for (const node of g.node) {
      if (keepCasts && castTo(node) !== undefined) continue;
      node.input.forEach((x, i) => { if (x === from) { node.input[i] = to; n++; } });
    }
    return n;
  };

  const head: NodeProto[] = [];
  const after = new Map<NodeProto, NodeProto>();
  // Constants: read through a Cast to float by everything but Casts (which read float16 fine).
  const constantNodes = new Map(g.node.filter((n) => n.opType === 'Constant' && isOnnxDomain(n)).map((n) => [n.output[0]!, n]));
  for (const name of float16Constants(g)) {
    const to = fresh(name);
    if (rewire(name, to, true) === 0) { taken.delete(to); continue; }
    stats.constants++;
    const c = cast(name, to, DataType.FLOAT);
    const producer = constantNodes.get(name);
    if (producer) after.set(producer, c); else head.push(c);
  }
  // Float16 graph inputs: cast once on the way in.
  for (const v of g.input) {
    if (elemType(v) !== DataType.FLOAT16 || g.initializer.some((t) => t.name === v.name)) continue;
    const to = fresh(v.name!);
    if (rewire(v.name!, to, true) > 0) { head.push(cast(v.name!, to, DataType.FLOAT)); stats.boundaries++; } else taken.delete(to);
  }
  // Attributes that make float16 values (but a Cast making a float16 graph output: the interface).
  const halfOutputs = new Set(g.output.filter((v) => elemType(v) === DataType.FLOAT16).map((v) => v.name!));
  for (const n of g.node) {
    for (const a of n.attribute) {
      if (n.opType === 'Cast' && a.name === 'to' && Number(a.i) === DataType.FLOAT16) {
        if (!halfOutputs.has(n.output[0]!)) { a.i = BigInt(DataType.FLOAT); stats.casts++; }
      }
      else if (DTYPE_OPS.has(n.opType ?? '') && a.name === 'dtype' && Number(a.i) === DataType.FLOAT16) { a.i = BigInt(DataType.FLOAT); stats.attributes++; }
      else if (n.opType === 'DequantizeLinear' && a.name === 'output_dtype' && Number(a.i) === DataType.FLOAT16) { a.i = BigInt(DataType.FLOAT); stats.attributes++; }
      else if (n.opType === 'ConstantOfShape' && a.name === 'value' && a.t?.dataType === DataType.FLOAT16) {
        a.t = makeFloatTensor(a.t.name ?? '', a.t.dims.map(Number), readTensorFloat(a.t));
        stats.attributes++;
      }
    }
  }
  // Float16 graph outputs made by a node: the node makes a float value, a Cast the output.
  const tail: NodeProto[] = [];
  const produced = new Map<string, NodeProto>();
  for (const n of g.node) for (const o of n.output) produced.set(o, n);
  for (const v of g.output) {
    const producer = produced.get(v.name!);
    // A Constant's float16 value is the output as it is (its readers were given the Cast
    // above); a Cast to float16 already is the boundary.
    if (elemType(v) !== DataType.FLOAT16 || !producer || constantNodes.has(v.name!) || castTo(producer) === DataType.FLOAT16) continue;
    const inner = fresh(v.name!);
    producer.output[producer.output.indexOf(v.name!)] = inner;
    rewire(v.name!, inner, false);
    tail.push(cast(inner, v.name!, DataType.FLOAT16));
    stats.boundaries++;
  }
  for (const v of g.valueInfo) {
    if (elemType(v) === DataType.FLOAT16) { v.type!.tensorType!.elemType = DataType.FLOAT; stats.values++; }
  }
  g.node = [...head, ...g.node.flatMap((n) => (after.has(n) ? [n, after.get(n)!] : [n])), ...tail];
  return stats;
}
