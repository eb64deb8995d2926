/** `onnx-lr inspect MODEL`: what the model is and which layers could be decomposed. */
import { Model } from '../graph/graph.js';
import { findLayers, type LayerInfo } from '../graph/layers.js';
import { shapesFor } from '../graph/layer-shapes.js';
import { REWRITABLE, roomOf, type Room } from '../graph/room.js';
import { summarize, type ModelSummary } from '../graph/summary.js';
import { loadModel } from '../onnx/file.js';
import { bytes, human, table } from '../report/format.js';
import type { DefaultedDim } from '../verify/inputs.js';
import { profileModel } from '../verify/profile.js';
import { expectPositionals, flag, parse, strs } from './args.js';
import { maxInputBytes } from './calibration.js';
import { feedOverrides } from './feeds.js';

export const INSPECT_HELP = `Usage: onnx-lr inspect MODEL [--shape NAME:1x3x224x224 ...] [--input NAME:file.npy ...] [--no-profile] [--json]

Prints the IR version, opsets, node count, op histogram, total parameters and a table of
the decomposable layers (Gemm, MatMul with a constant operand, Conv, ConvTranspose,
Gather on a constant table): name, op, weight shape, params, MACs and where the weight
lives. MACs need shapes: they come from one ONNX Runtime run at the input shapes
(--shape fixes dynamic dims; unnamed dynamic dims default to 1 and the output says so).

Then it says where the time goes: ONNX Runtime's profiler times every node on one
seeded input (1 thread, basic optimisation level, median of 3 runs after a warm-up),
and the table gives each layer kind's share of the MACs and of the time. Low-rank
rewrites shrink dense kxk convs, 1x1 convs and Gemm/MatMul layers; depthwise convs and
everything that is not a layer (activations, normalisation, pooling) they leave as it is.
So the time share of those kinds bounds what any rewrite can give: if they took no time
at all, the model would run 1/(1 - share) times faster.

Options:
  --shape NAME:DIMS   concrete dims for an input, e.g. x:1x3x640x640 (repeatable)
  --input NAME:FILE   a .npy value for an input (e.g. a sample-rate scalar) (repeatable)
  --max-input-mb N    largest --input file, in MiB (default 1024)
  --no-profile        skip the timing (shares then come from MACs, which overstate
                      what memory-bound layers cost)
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
  /** Where the MACs and the time go by layer kind, and the speed-up bound that follows. */
  room: Room;
  /** Why the shares come from MACs instead of measured time. */
  roomNote?: string;
}


export function layerRows(layers: readonly LayerInfo[]): InspectLayer[] {
  return layers.map((l) => ({
    name: l.name, op: l.op, weightShape: l.weightShape, params: l.params, macs: l.macs ?? null,
    where: l.subgraphDepth > 0 ? `${l.where} (subgraph)` : l.where, subgraphDepth: l.subgraphDepth,
  }));
}

export async function inspect(argv: readonly string[], out: (s: string) => void): Promise<number> {
  const p = parse(argv, {
    shape: { type: 'string', multiple: true }, input: { type: 'string', multiple: true }, 'no-profile': { type: 'boolean' }, 'max-input-mb': { type: 'string' },
    json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  }, 'inspect');
  if (flag(p, 'help')) { out(INSPECT_HELP); return 0; }
  const [file] = expectPositionals(p, 1, 'inspect', 'MODEL');
  const loaded = loadModel(file);
  try {
    const model = new Model(loaded.model);
    const { shapes, values } = feedOverrides(strs(p, 'shape'), strs(p, 'input'), maxInputBytes(p));
    const sh = await shapesFor(loaded, model, shapes, values);
    const layers = findLayers(model, sh.shapes);
    let roomNote: string | undefined = 'not timed: --no-profile';
    let times;
    if (layers.length === 0) roomNote = 'no decomposable layers';
    else if (!flag(p, 'no-profile')) {
      const t = await profileModel(loaded.path, { shapes, values });
      if (t.ok) { times = t.value; roomNote = undefined; } else roomNote = `profiling failed: ${t.error.message}`;
    }
    const res: InspectResult = {
      file, bytes: loaded.byteSize, ...summarize(loaded.model, layers),
      layers: layerRows(layers), shapeSource: sh.source, shapeNote: sh.note, defaultedDims: sh.defaulted,
      room: roomOf(layers, times), ...(roomNote && { roomNote }),
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
  if (r.layers.length > 0) lines.push('', ...renderRoom(r.room, r.roomNote));
  return lines.join('\n');
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

/** The kind table and the bound, in one or two sentences a user can act on. */
export function renderRoom(room: Room, note?: string): string[] {
  const timed = room.totalUs !== undefined;
  const layerUs = room.kinds.reduce((a, k) => a + (k.us ?? 0), 0);
  const rows = room.kinds.map((k) => [k.kind, String(k.layers), room.macs > 0 ? pct(k.macs / room.macs) : '?', ...(timed ? [pct(k.us! / room.totalUs!)] : [])]);
  if (timed) rows.push(['not layers (activations, norms, pooling, ...)', '', '', pct(1 - layerUs / room.totalUs!)]);
  const out = [`where the ${timed ? 'time goes' : 'MACs go'}${timed ? ' (ORT kernel times, 1 thread, basic optimisation level)' : ` (${note ?? 'not timed'})`}:`];
  out.push(table(['kind', 'layers', 'MACs', ...(timed ? ['time'] : [])], rows, ['l', 'r', 'r', 'r']));
  const kinds = [...REWRITABLE].join(', ');
  const bound = Number.isFinite(room.bound) ? `${room.bound.toFixed(2)}x` : 'unbounded';
  out.push(`low-rank rewrites shrink ${kinds} layers: ${pct(room.rewritableShare)} of the ${room.basis === 'time' ? 'time' : 'layers\' MACs'}, so no rewrite can make this model more than ${bound} faster${room.basis === 'time' ? '' : ' (an overestimate: MACs are not time)'}`);
  return out;
}
