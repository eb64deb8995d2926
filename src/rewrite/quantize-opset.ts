/**
 * Raising a model's default-domain opset import to 13, which per-channel DequantizeLinear
 * (`axis`) needs, for int8 factors (quantize-factors.ts). Raising the import re-reads every
 * node under its opset-13 schema, so it is done only when each node means the same there:
 * the ops whose schema changed in meaning between the model's opset and 13 are rewritten to
 * their opset-13 form (attributes that became inputs, Softmax's axis), and a model holding
 * any other changed op (Upsample, Resize before 11, a Dropout mask, …) is declined with the
 * op named. Models below opset 7 (the old broadcasting) are declined.
 *
 * Rewritten (exact):
 *   Slice < 10        starts/ends/axes attributes → int64 inputs
 *   TopK < 10         k attribute → int64 input [1]
 *   Clip < 11         min/max attributes → scalar inputs (float models)
 *   Pad < 11          pads/value attributes → inputs (mode stays)
 *   Dropout < 12      ratio attribute dropped (inference: identity either way); mask unused
 *   Squeeze/Unsqueeze/ReduceSum/Split < 13   axes / split attributes → int64 inputs
 *   Softmax/LogSoftmax/Hardmax < 13   x [d0..dn] over axes ≥ a as one: kept when a is the
 *                     last axis, else Flatten(a) → op(axis −1) → Reshape(Shape(x))
 */
import { attrFloat, attrInt, attrInts, intAttr, subgraphsOf } from '../graph/attrs.js';
import type { Model } from '../graph/graph.js';
import type { ShapeMap } from '../graph/shapes.js';
import { DataType, newNode, type GraphProto, type NodeProto } from '../onnx/schema.js';
import { makeFloatTensor, makeInt64Tensor } from '../onnx/tensor.js';

export const PER_CHANNEL_OPSET = 13;

/**
 * Ops whose meaning (not only their types) changed by opset 13 and that are not rewritten
 * here: a model below the opset given holds them in their old form. Upsample and Scatter
 * are deprecated; Resize-11 changed the default coordinate mapping; BatchNormalization-9
 * dropped `spatial`; Scan-9 changed its inputs.
 */
const UNSAFE_BELOW: Readonly<Record<string, number>> = {
  Upsample: Infinity, Scatter: Infinity, Resize: 11, Scan: 9, BatchNormalization: 9,
};

/** The rewrites, by op: the opset below which the node is in its old form. */
const REWRITTEN: Readonly<Record<string, number>> = {
  Slice: 10, TopK: 10, Clip: 11, Pad: 11, Dropout: 12, Squeeze: 13, Unsqueeze: 13, ReduceSum: 13, Split: 13, Softmax: 13, LogSoftmax: 13, Hardmax: 13,
};

const isDefault = (n: NodeProto): boolean => (n.domain ?? '') === '' || n.domain === 'ai.onnx';

function* nodesOf(g: GraphProto): Generator<{ n: NodeProto; g: GraphProto }> {
  for (const n of g.node) {
    yield { n, g };
    for (const sg of subgraphsOf(n)) yield* nodesOf(sg);
  }
}

/**
 * Why the model's default opset cannot be raised to 13 here, or undefined. Pure: checks
 * every node (subgraphs included) against the changes between the model's opset and 13.
 */
export function opsetRaiseProblem(model: Model): string | undefined {
  const from = model.opsetVersion('') ?? 1;
  if (from >= PER_CHANNEL_OPSET) return undefined;
  if (from < 7) return `the model imports opset ${from}: below 7, raising it would change broadcasting`;
  const bad = new Set<string>();
  for (const { n } of nodesOf(model.proto.graph!)) {
    if (!isDefault(n)) continue;
    const op = n.opType ?? '';
    if (op === 'Dropout' && n.output.length > 1 && n.output[1]) { bad.add('Dropout (its mask)'); continue; }
    if (from < (UNSAFE_BELOW[op] ?? 0)) bad.add(op);
  }
  if ((model.proto.functions ?? []).length > 0) bad.add('model-local functions');
  return bad.size > 0 ? `the model imports opset ${from}; raising it to 13 would change ${[...bad].sort().join(', ')}` : undefined;
}

/**
 * Rewrites the changed ops to their opset-13 form and raises the default opset import to
 * 13 (IR version at least 7). Call only when opsetRaiseProblem says nothing. Returns the
 * op types rewritten.
 */
export function raiseOpset(model: Model, shapes: ShapeMap | undefined): string[] {
  const from = model.opsetVersion('') ?? 1;
  if (from >= PER_CHANNEL_OPSET) return [];
  const rewritten = new Set<string>();
  for (const g of model.allGraphs()) {
    for (const n of [...g.nodes]) {
      if (!isDefault(n)) continue;
      const op = n.opType ?? '';
      const below = REWRITTEN[op];
      if (below === undefined || from >= below) continue;
      const constInt = (suffix: string, values: readonly number[], dims = [values.length]): string => {
        const name = model.uniqueName(`${n.name || n.output[0]}/${suffix}`);
        g.addInitializer(makeInt64Tensor(name, dims, values));
        return name;
      };
      const constFloat = (suffix: string, value: number): string => {
        const name = model.uniqueName(`${n.name || n.output[0]}/${suffix}`);
        g.addInitializer(makeFloatTensor(name, [], Float32Array.of(value), DataType.FLOAT));
        return name;
      };
      const drop = (...names: string[]): NodeProto['attribute'] => n.attribute.filter((a) => !names.includes(a.name ?? ''));
      let next: NodeProto[] | undefined;
      switch (op) {
        case 'Slice': {
          const axes = attrInts(n, 'axes');
          const input = [n.input[0]!, constInt('starts', attrInts(n, 'starts') ?? []), constInt('ends', attrInts(n, 'ends') ?? []), ...(axes ? [constInt('axes', axes)] : [])];
          next = [{ ...n, input, attribute: drop('starts', 'ends', 'axes') }];
          break;
        }
        case 'TopK':
          next = [{ ...n, input: [n.input[0]!, constInt('k', [attrInt(n, 'k', 1)])], attribute: drop('k') }];
          break;
        case 'Clip': {
          // Clip-6's defaults are ±FLT_MAX: as inputs, absent means unbounded, the same.
          const has = (a: string): boolean => n.attribute.some((x) => x.name === a);
          const input = [n.input[0]!, has('min') ? constFloat('min', attrFloat(n, 'min', 0)) : '', has('max') ? constFloat('max', attrFloat(n, 'max', 0)) : ''];
          while (input.length > 1 && input[input.length - 1] === '') input.pop();
          next = [{ ...n, input, attribute: drop('min', 'max') }];
          break;
        }
        case 'Pad': {
          const value = n.attribute.some((x) => x.name === 'value') ? attrFloat(n, 'value', 0) : undefined;
          const input = [n.input[0]!, constInt('pads', attrInts(n, 'pads') ?? []), ...(value !== undefined ? [constFloat('value', value)] : [])];
          next = [{ ...n, input, attribute: drop('pads', 'value') }];
          break;
        }
        case 'Dropout':
          next = [{ ...n, input: [n.input[0]!], output: [n.output[0]!], attribute: drop('ratio', 'is_test') }];
          break;
        case 'Squeeze': case 'Unsqueeze': case 'ReduceSum': {
          const axes = attrInts(n, 'axes');
          next = [{ ...n, input: [n.input[0]!, ...(axes ? [constInt('axes', axes)] : [])], attribute: drop('axes') }];
          break;
        }
        case 'Split': {
          const parts = attrInts(n, 'split');
          next = [{ ...n, input: [n.input[0]!, ...(parts ? [constInt('split', parts)] : [])], attribute: drop('split') }];
          break;
        }
        case 'Softmax': case 'LogSoftmax': case 'Hardmax': {
          const axis = attrInt(n, 'axis', 1);
          const rank = n.input[0] ? shapes?.get(n.input[0])?.length : undefined;
          if (rank !== undefined && (axis === rank - 1 || axis === -1)) {
            next = [{ ...n, attribute: [...drop('axis'), intAttr('axis', -1)] }];
            break;
          }
          // The old meaning, spelled out: the axes from `axis` on as one.
          const base = n.name || n.output[0]!;
          const flat = model.uniqueName(`${base}/flat`);
          const y2 = model.uniqueName(`${base}/2d`);
          const shape = model.uniqueName(`${base}/shape`);
          next = [
            newNode({ opType: 'Flatten', name: model.uniqueName(`${base}/flatten`), input: [n.input[0]!], output: [flat], attribute: [intAttr('axis', axis)] }),
            { ...n, input: [flat], output: [y2], attribute: [...drop('axis'), intAttr('axis', -1)] },
            newNode({ opType: 'Shape', name: model.uniqueName(`${base}/shape_of`), input: [n.input[0]!], output: [shape] }),
            newNode({ opType: 'Reshape', name: model.uniqueName(`${base}/unflatten`), input: [y2, shape], output: [n.output[0]!] }),
          ];
          break;
        }
      }
      if (next) {
        g.replaceNode(n, next);
        rewritten.add(op);
      }
    }
  }
  const imp = model.proto.opsetImport.find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx');
  if (imp) imp.version = PER_CHANNEL_OPSET;
  model.proto.irVersion = Math.max(model.proto.irVersion ?? 7, 7);
  return [...rewritten].sort();
}
