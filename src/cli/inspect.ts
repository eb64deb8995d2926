/** `onnx-lr inspect MODEL`: what the model is and which layers could be decomposed. */
import { inspectFile, layerRows, type InspectLayer, type InspectResult } from '../api/inspect.js';
import { REWRITABLE, type Room } from '../graph/room.js';
import { bytes, human, table } from '../report/format.js';
import { SCHEMA_VERSION } from '../report/kinds.js';
import { expectPositionals, flag, parse, strs } from './args.js';
import { maxInputBytes } from './calibration.js';
import { feedOverrides } from './feeds.js';

export const INSPECT_HELP = `Usage: onnx-lr inspect MODEL [--shape NAME:1x3x224x224 ...] [--input NAME:file.npy ...] [--no-profile] [--json]

Prints the IR version, opsets, node count, op histogram, total parameters and a table of
the decomposable layers (Gemm, MatMul with a constant operand, Conv, ConvTranspose,
Gather on a constant table): name, op, weight shape, params, MACs, where the weight
lives and how it is stored (fp32, fp16, bf16, or "fp16 via Cast" for a weight stored
fp16 and cast to float for the op). Layers whose weight is int8 behind DequantizeLinear
(weight-only QDQ, e.g. from optimize --weights int8) are listed apart: they are not
decomposed. So are the other nodes that hold a constant weight (a float constant with two
or more dims above 1: an Einsum operand, a 3-D Gather table, a positional table added to
the input…), each with why no rewrite takes it. MACs need shapes: they come from one ONNX Runtime run at the input shapes
(--shape fixes dynamic dims; unnamed dynamic dims default to 1 and the output says so).

Then it says where the time goes: ONNX Runtime's profiler times every node on one
seeded input (1 thread, basic optimisation level, median of 3 runs after a warm-up),
and the table gives each layer kind's share of the MACs and of the time. Low-rank
rewrites shrink dense kxk convs, 1x1 convs and Gemm/MatMul layers; depthwise convs and
everything that is not a layer (activations, normalisation, pooling) they leave as it is.
So the time share of those kinds bounds what any rewrite can give: if they took no time
at all, the model would run 1/(1 - share) times faster.

It also notes two exact changes that speed up ONNX Runtime's CPU provider: a float16 graph
(which it runs in float32 behind Casts: --compute float32), and convs to at most half its
channel block whose readers it runs on the padded block (a 1-channel head
before a Resize: optimize's narrow reorder, or convert --narrow-reorder).

Options:
  --shape NAME:DIMS   concrete dims for an input, e.g. x:1x3x640x640 (repeatable)
  --input NAME:FILE   a .npy value for an input (e.g. a sample-rate scalar) (repeatable)
  --max-input-mb N    largest --input file, in MiB (default 1024)
  --no-profile        skip the timing (shares then come from MACs, which overstate
                      what memory-bound layers cost)
  --json              print one JSON object instead of text
  -h, --help          this help`;

export type { InspectLayer, InspectResult };
export { layerRows };

export async function inspect(argv: readonly string[], out: (s: string) => void): Promise<number> {
  const p = parse(argv, {
    shape: { type: 'string', multiple: true }, input: { type: 'string', multiple: true }, 'no-profile': { type: 'boolean' }, 'max-input-mb': { type: 'string' },
    json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  }, 'inspect');
  if (flag(p, 'help')) { out(INSPECT_HELP); return 0; }
  const [file] = expectPositionals(p, 1, 'inspect', 'MODEL');
  const res = await inspectFile(file, file, () => feedOverrides(strs(p, 'shape'), strs(p, 'input'), maxInputBytes(p)), !flag(p, 'no-profile'));
  out(flag(p, 'json') ? JSON.stringify({ schemaVersion: SCHEMA_VERSION, ...res }, null, 2) : renderInspect(res));
  return 0;
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
  if (r.computeNote) lines.push(`note: ${r.computeNote}`);
  if (r.narrowNote) lines.push(`note: ${r.narrowNote}`);
  lines.push('');
  lines.push(`decomposable layers: ${r.layers.length}`);
  if (r.layers.length > 0) {
    lines.push(table(
      ['name', 'op', 'weight', 'params', 'MACs', 'where', 'stored'],
      r.layers.map((l) => [l.name, l.op, l.weightShape.join('x'), human(l.params), l.macs === null ? '?' : human(l.macs), l.where, l.stored]),
      ['l', 'l', 'l', 'r', 'r', 'l', 'l'],
    ));
  }
  if (r.quantizedLayers.length > 0) {
    lines.push('', `quantized layers (weight-only QDQ, not decomposed): ${r.quantizedLayers.length}`);
    lines.push(table(
      ['name', 'op', 'weight', 'params', 'MACs', 'stored'],
      r.quantizedLayers.map((l) => [l.name, l.op, l.weightShape.join('x'), human(l.params), l.macs === null ? '?' : human(l.macs), l.stored]),
      ['l', 'l', 'l', 'r', 'r', 'l'],
    ));
  }
  if (r.otherWeights.length > 0) {
    lines.push('', `other constant weights (no rewrite applies): ${r.otherWeights.length}`);
    lines.push(table(
      ['name', 'op', 'weight', 'params', 'why'],
      r.otherWeights.map((o) => [o.name, o.op, o.weightShape.join('x'), human(o.params), o.reason]),
      ['l', 'l', 'l', 'r', 'l'],
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
