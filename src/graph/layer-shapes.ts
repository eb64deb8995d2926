/** Shapes for the decomposable layers of a loaded model (MAC counts, layer timing). */
import type { LoadedModel } from '../onnx/file.js';
import type { NodeProto } from '../onnx/schema.js';
import type { DefaultedDim, ShapeOverrides, ValueOverrides } from '../verify/inputs.js';
import type { Model } from './graph.js';
import { findLayers } from './layers.js';
import { declaredShapes, learnShapes, type ShapeMap } from './shapes.js';

/**
 * Shapes for MAC counts: one ORT run when possible, else only what the model declares.
 * `extra`: more nodes whose MACs are counted besides the decomposable layers (inspect's
 * layers behind DequantizeLinear, rewrite/quantize-inspect.ts), with the same tensors read.
 */
export async function shapesFor(
  loaded: LoadedModel, model: Model, shapes: ShapeOverrides, values: ValueOverrides, extra: readonly NodeProto[] = [],
): Promise<{ shapes: ShapeMap; source: 'ort-run' | 'declared'; note?: string; defaulted: DefaultedDim[] }> {
  const nodes = [...findLayers(model).map((l) => l.node), ...extra];
  // No layer, no MACs to count: running the model would only cost time and memory.
  if (nodes.length === 0) return { shapes: declaredShapes(loaded.model), source: 'declared', defaulted: [] };
  const names = [...new Set(nodes.flatMap((n) => [n.output[0], n.input[0]]))].filter((x): x is string => !!x);
  const r = await learnShapes(loaded.model, { shapes, values, names, external: loaded.external, modelDir: loaded.dir });
  if (r.ok) return { shapes: r.value.shapes, source: 'ort-run', defaulted: r.value.defaulted };
  // A --shape/--input that names no input or disagrees with the model is the user's mistake:
  // report it now (optimize would otherwise write OUT and only then fail verification).
  if (r.error.kind === 'usage') throw r.error;
  return { shapes: declaredShapes(loaded.model), source: 'declared', note: `MACs from declared shapes only (ORT run failed: ${r.error.message})`, defaulted: [] };
}
