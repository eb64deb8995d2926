/**
 * Where shapes come from: dims declared in the model (inputs, outputs, value_info), and,
 * when intermediate shapes are not declared, one ORT run of a copy of the model whose
 * graph outputs list every main-graph value. Values inside subgraphs cannot be exposed
 * that way; they keep only their declared shapes.
 */
import * as path from 'node:path';
import { err, ok, type Result } from '../errors.js';
import { concatParts } from '../onnx/wire.js';
import { encodeParts, partsLength } from '../onnx/codec.js';
import { newNode, newValueInfo, type GraphProto, type ModelProto } from '../onnx/schema.js';
import { buildFeeds, type DefaultedDim, type FeedPlan, type ShapeOverrides, type ValueOverrides } from '../verify/inputs.js';
import type { HostTensor } from '../verify/tensor.js';
import { createSession, type ModelSource } from '../verify/session.js';
import { forEachTensor, MAX_PROTOBUF_BYTES, mapTensors } from '../onnx/file.js';
import { isExternal, tensorByteSize, tensorRawBytes, type ExternalBytes } from '../onnx/tensor.js';
import type { TensorProto } from '../onnx/schema.js';
import { TempFile } from '../util/temp-files.js';
import { freshName, namesOf } from '../onnx/names.js';
import { subgraphsOf } from './attrs.js';

function inlined(t: TensorProto, ext: ExternalBytes): TensorProto {
  const c: TensorProto = { ...t, externalData: [], rawData: tensorRawBytes(t, ext) };
  delete c.dataLocation;
  return c;
}

export type ShapeMap = Map<string, number[]>;

function addDeclared(g: GraphProto, into: ShapeMap): void {
  for (const v of [...g.input, ...g.output, ...g.valueInfo]) {
    const dims = v.type?.tensorType?.shape?.dim;
    if (!v.name || !dims) continue;
    if (dims.every((d) => d.dimValue !== undefined && d.dimValue >= 0)) into.set(v.name, dims.map((d) => d.dimValue!));
  }
  for (const t of g.initializer) if (t.name) into.set(t.name, [...t.dims]);
  for (const n of g.node) for (const sg of subgraphsOf(n)) addDeclared(sg, into);
}

/** Fully static shapes declared anywhere in the model. */
export function declaredShapes(model: ModelProto): ShapeMap {
  const m: ShapeMap = new Map();
  if (model.graph) addDeclared(model.graph, m);
  return m;
}

export interface LearnedShapes {
  shapes: ShapeMap;
  /** Input dims that were dynamic and set to 1 because no --shape named them. */
  defaulted: DefaultedDim[];
  /** The concrete input dims used. */
  inputDims: Record<string, number[]>;
}

/**
 * Runs the model once in ORT with the shape of every main-graph value (Shape nodes) exposed
 * as an output, and records each. Fetching the values themselves copied every activation
 * out of ORT into fresh memory: on ISNet at 1024² that was most of the run's 17 s. Where
 * Shape nodes cannot be added (no ONNX-domain opset) or ORT refuses them (a value that is
 * not a tensor), the values themselves are fetched as before. Declared shapes fill in what
 * the run cannot see.
 */
export async function learnShapes(
  model: ModelProto,
  opts: {
    shapes?: ShapeOverrides; values?: ValueOverrides; seed?: number; names?: readonly string[]; external?: ExternalBytes;
    /**
     * The model's folder. With external data, the probe is written there under a hidden
     * temp name and loaded by path, so ORT reads the weights from their files (nothing is
     * inlined, and models past 2 GiB work); it is removed afterwards.
     */
    modelDir?: string;
  } = {},
): Promise<Result<LearnedShapes>> {
  const g = model.graph;
  if (!g) return err('parse', 'the model has no graph');
  const existing = new Set(g.output.map((o) => o.name));
  const initNames = new Set(g.initializer.map((t) => t.name));
  const wanted = opts.names ? new Set(opts.names) : undefined;
  const values: string[] = [];
  for (const n of g.node) {
    for (const o of n.output) {
      if (!o || existing.has(o) || initNames.has(o) || (wanted && !wanted.has(o))) continue;
      values.push(o);
      existing.add(o);
    }
  }
  const byShape = values.length > 0 ? shapeProbe(model, values) : undefined;
  if (byShape) {
    const r = await runProbe(byShape.probe, opts);
    if (r.ok) return ok(learned(model, r.value, byShape.valueOf));
    // A usage error (a --shape that names no input) stands; anything else: fetch the values.
    if (r.error.kind === 'usage') return r;
  }
  // A shallow copy: only the output list differs, the (possibly large) tensors are shared.
  const probe: ModelProto = { ...model, graph: { ...g, output: [...g.output, ...values.map((name) => newValueInfo({ name }))] } };
  const r = await runProbe(probe, opts);
  return r.ok ? ok(learned(model, r.value, new Map())) : r;
}

/** The declared shapes with a probe run's on top: each output's dims, or for a Shape output (`valueOf`) its value's. */
function learned(model: ModelProto, run: { out: Record<string, HostTensor>; plan: FeedPlan }, valueOf: ReadonlyMap<string, string>): LearnedShapes {
  const shapes = declaredShapes(model);
  for (const [name, t] of Object.entries(run.out)) {
    const value = valueOf.get(name);
    if (value === undefined) shapes.set(name, [...t.dims]);
    else shapes.set(value, Array.from(t.data as ArrayLike<number | bigint>, Number));
  }
  for (const [name, dims] of Object.entries(run.plan.dims)) shapes.set(name, dims);
  return { shapes, defaulted: run.plan.defaulted, inputDims: run.plan.dims };
}

/**
 * A copy of the model that also outputs Shape(v) for each of `values` (int64 [rank]) under
 * new names, with which value each belongs to; undefined without an ONNX-domain opset.
 */
export function shapeProbe(model: ModelProto, values: readonly string[]): { probe: ModelProto; valueOf: Map<string, string> } | undefined {
  const g = model.graph!;
  if (!model.opsetImport.some((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx')) return undefined;
  const taken = namesOf(g);
  const valueOf = new Map<string, string>();
  const nodes = values.map((v) => {
    const name = freshName(taken, `${v}::shape`);
    valueOf.set(name, v);
    return newNode({ opType: 'Shape', input: [v], output: [name] });
  });
  const outputs = [...valueOf.keys()].map((name) => newValueInfo({ name }));
  return { probe: { ...model, graph: { ...g, node: [...g.node, ...nodes], output: [...g.output, ...outputs] } }, valueOf };
}

/** One ORT run of `probe` (a copy of the model with more outputs) on seeded inputs: its outputs and the feeds' plan. */
async function runProbe(
  probeIn: ModelProto, opts: { shapes?: ShapeOverrides; values?: ValueOverrides; seed?: number; external?: ExternalBytes; modelDir?: string },
): Promise<Result<{ out: Record<string, HostTensor>; plan: FeedPlan }>> {
  // External tensors are inlined: ORT resolves external data only when loading from a path.
  let probe = probeIn;
  let externalBytes = 0;
  forEachTensor(probe, (t) => { if (isExternal(t)) externalBytes += tensorByteSize(t); });
  let src: ModelSource;
  let tmp: TempFile | undefined;
  if (externalBytes > 0 && opts.modelDir) {
    try {
      tmp = new TempFile(path.join(opts.modelDir, 'onnx-lr-shape-probe.onnx'));
      for (const p of encodeParts('ModelProto', probe)) tmp.write(p);
      tmp.finish();
    } catch (e) {
      tmp?.discard();
      return err('io', `cannot write a probe model beside the input (${(e as Error).message})`);
    }
    src = { path: tmp.tmpPath };
  } else {
    const ext = opts.external;
    if (externalBytes > 0) {
      // Inlining reads every external payload: check the size first (ORT parses ≤ 2 GiB from memory).
      if (!ext) return err('usage', 'the model has external data but no reader was given');
      const inlineSize = partsLength(encodeParts('ModelProto', probe)) + externalBytes;
      if (inlineSize > MAX_PROTOBUF_BYTES) return err('unsupported', `the model with its external data inlined would be ${inlineSize} bytes, over ORT's 2 GiB limit`);
      probe = mapTensors(probe, (t) => (isExternal(t) ? inlined(t, ext) : t));
    }
    src = { bytes: concatParts(encodeParts('ModelProto', probe)) };
  }
  const sess = await createSession(src, { graphOptimizationLevel: 'disabled', label: 'the model' });
  if (!sess.ok) { tmp?.discard(); return sess; }
  try {
    const plan = buildFeeds(sess.value.inputs, { seed: opts.seed ?? 0, shapes: opts.shapes, values: opts.values });
    if (!plan.ok) return plan;
    const out = await sess.value.run(plan.value.feeds[0]);
    if (!out.ok) return out;
    return ok({ out: out.value, plan: plan.value });
  } finally {
    await sess.value.release();
    tmp?.discard();
  }
}
