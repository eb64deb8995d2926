/** `onnx-lr inspect MODEL`: what the model is and which layers could be decomposed. */
import { Model } from '../graph/graph.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import { shapesFor } from '../graph/layer-shapes.js';
import { summarize, type ModelSummary } from '../graph/summary.js';
import { loadModel } from '../onnx/file.js';
import { bytes, human, table } from '../report/format.js';
import type { DefaultedDim } from '../verify/inputs.js';
import { expectPositionals, flag, parse, strs } from './args.js';
import { feedOverrides } from './feeds.js';

export const INSPECT_HELP = `Usage: onnx-lr inspect MODEL [--shape NAME:1x3x224x224 ...] [--input NAME:file.npy ...] [--json]

Prints the IR version, opsets, node count, op histogram, total parameters and a table of
the decomposable layers (Gemm, MatMul with a constant operand, Conv, ConvTranspose,
Gather on a constant table): name, op, weight shape, params, MACs and where the weight
lives. MACs need shapes: they come from one ONNX Runtime run at the input shapes
(--shape fixes dynamic dims; unnamed dynamic dims default to 1 and the output says so).

Options:
  --shape NAME:DIMS   concrete dims for an input, e.g. x:1x3x640x640 (repeatable)
  --input NAME:FILE   a .npy value for an input (e.g. a sample-rate scalar) (repeatable)
  --json              print one JSON object instead of text
  -h, --help          this help`;

export interface InspectLayer {
  name: string;
  op: string;
  weightShape: number[];
  params: number;
  macs: number | null;
  where: string;
  subgraphDepth: number;
}

export interface InspectResult extends ModelSummary {
  file: string;
  bytes: number;
  layers: InspectLayer[];
  shapeSource: 'ort-run' | 'declared';
  shapeNote?: string;
  defaultedDims: DefaultedDim[];
}


export function layerRows(layers: readonly LayerInfo[]): InspectLayer[] {
  return layers.map((l) => ({
    name: l.name, op: l.op, weightShape: l.weightShape, params: l.params, macs: l.macs ?? null,
    where: l.subgraphDepth > 0 ? `${l.where} (subgraph)` : l.where, subgraphDepth: l.subgraphDepth,
  }));
}

export async function inspect(argv: readonly string[], out: (s: string) => void): Promise<number> {
  const p = parse(argv, { shape: { type: 'string', multiple: true }, input: { type: 'string', multiple: true }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, 'inspect');
  if (flag(p, 'help')) { out(INSPECT_HELP); return 0; }
  const [file] = expectPositionals(p, 1, 'inspect', 'MODEL');
  const loaded = loadModel(file);
  try {
    const model = new Model(loaded.model);
    const { shapes, values } = feedOverrides(strs(p, 'shape'), strs(p, 'input'));
    const sh = await shapesFor(loaded, model, shapes, values);
    const layers = findLayers(model, sh.shapes);
    const res: InspectResult = {
      file, bytes: loaded.byteSize, ...summarize(loaded.model, layers),
      layers: layerRows(layers), shapeSource: sh.source, shapeNote: sh.note, defaultedDims: sh.defaulted,
    };
    out(flag(p, 'json') ? JSON.stringify(res, null, 2) : renderInspect(res));
    return 0;
  } finally {
    loaded.external.close();
  }
}

export function renderInspect(r: InspectResult): string {
  const lines: string[] = [];
  lines.push(`${r.file}  (${bytes(r.bytes)})`);
  lines.push(`IR ${r.irVersion}, opsets: ${Object.entries(r.opsets).map(([d, v]) => `${d} ${v}`).join(', ')}`);
  lines.push(`nodes: ${r.nodeCount}   params: ${r.params.toLocaleString('en-US')}   MACs (decomposable layers): ${human(r.macs)}`);
  lines.push(`ops: ${Object.entries(r.ops).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (r.defaultedDims.length > 0) {
    lines.push(`note: dynamic dims set to 1 (use --shape): ${r.defaultedDims.map((d) => `${d.input}[${d.axis}]${d.symbol ? `=${d.symbol}` : ''}`).join(', ')}`);
  }
  if (r.shapeNote) lines.push(`note: ${r.shapeNote}`);
  lines.push('');
  lines.push(`decomposable layers: ${r.layers.length}`);
  if (r.layers.length > 0) {
    lines.push(table(
      ['name', 'op', 'weight', 'params', 'MACs', 'where'],
      r.layers.map((l) => [l.name, l.op, l.weightShape.join('x'), human(l.params), l.macs === null ? '?' : human(l.macs), l.where]),
      ['l', 'l', 'l', 'r', 'r', 'l'],
    ));
  }
  return lines.join('\n');
}
