/**
 * Fuzz inputs for the CLI: base models (three small real ones and a few synthetic ones)
 * and seeded mutations of them, at three levels:
 * - bytes: bit flips, truncations, wire-type changes, length and varint edits, splices;
 * - struct: decode → edit the protobuf objects → encode (bad dims, duplicate names,
 *   dangling inputs, cycles, missing initializers, unknown ops/domains, IR/opset out of
 *   range, NaN/Inf weights, bad attributes, …);
 * - external: the model saved with external data, then its references or data file broken
 *   (outside the folder, past the end, symlinks, FIFOs, truncated files, …).
 *
 * A case is fully determined by its Recipe (base, family, seed, and the mutation kinds
 * chosen): `materialize` rebuilds it byte for byte, so a recipe is a replayable
 * regression. Each kind draws from its own stream (seed, index), so adding kinds does not
 * change what existing recipes produce.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelBuilder, floatTensor, valueInfo } from '../../models/builder.js';
import { realModelArgs, REAL_MODELS } from '../../models/real.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { saveModel } from '../../src/onnx/file.js';
import {
  AttributeType, DataType, newAttribute, newGraph, newNode, newTensor, SCHEMA,
  type AttributeProto, type FieldSpec, type GraphProto, type MessageName, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto,
} from '../../src/onnx/schema.js';
import { Writer } from '../../src/onnx/wire.js';
import { createRng, type Rng } from '../../src/util/rng.js';

export type Base = 'wake' | 'cls' | 'vad' | 'mlp' | 'conv' | 'ifm' | 'constw' | 'ir4' | 'shared';
export type Family = 'bytes' | 'struct' | 'external';

export interface Recipe {
  base: Base;
  family: Family;
  seed: number;
  /** Mutation kinds, in order; chosen from the seed when absent. */
  kinds?: string[];
}

export interface Case {
  recipe: Recipe & { kinds: string[] };
  /** The mutated model. */
  model: string;
  /** Every input file (model and data files) whose bytes must not change. */
  inputs: string[];
  /** --shape / --input arguments the base needs. */
  args: string[];
  /** What was done, for the failure message. */
  desc: string[];
}

export const REAL_BASES: readonly Base[] = ['wake', 'cls', 'vad'];
export const SYNTHETIC_BASES: readonly Base[] = ['mlp', 'conv', 'ifm', 'constw', 'ir4', 'shared'];

// ---- base models ------------------------------------------------------------------------

function rnd(rng: Rng, n: number, scale = 0.3): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

function buildSynthetic(base: Base): ModelProto {
  const rng = createRng(1234);
  switch (base) {
    case 'mlp': {
      const b = new ModelBuilder({ opset: 13 });
      const x = b.input('x', [2, 16]);
      const h1 = b.node('MatMul', [x, b.init('w1', [16, 24], rnd(rng, 384))], {}, { name: 'mm1' });
      const r = b.node('Relu', [h1], {}, { name: 'relu' });
      const h2 = b.node('Gemm', [r, b.init('w2', [12, 24], rnd(rng, 288)), b.init('c2', [12], rnd(rng, 12))], { transB: 1 }, { name: 'gemm2' });
      const y = b.node('MatMul', [h2, b.init('w3', [12, 8], rnd(rng, 96))], {}, { name: 'mm3' });
      b.output(y, [2, 8]);
      return b.build();
    }
    case 'conv': {
      const b = new ModelBuilder({ opset: 13 });
      const x = b.input('x', [1, 4, 8, 8]);
      const c1 = b.node('Conv', [x, b.init('k1', [8, 4, 3, 3], rnd(rng, 288))], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }, { name: 'conv1' });
      const r = b.node('Relu', [c1], {}, { name: 'relu' });
      const c2 = b.node('Conv', [r, b.init('k2', [6, 8, 1, 1], rnd(rng, 48)), b.init('b2', [6], rnd(rng, 6))], {}, { name: 'conv2' });
      const c3 = b.node('Conv', [c2, b.init('k3', [6, 3, 3, 3], rnd(rng, 162))], { group: 2, strides: [2, 2], pads: [1, 1, 1, 1] }, { name: 'conv3' });
      b.output(c3, [1, 6, 4, 4]);
      return b.build();
    }
    case 'ifm': {
      // Both branches read an outer initializer (as Silero does) and have their own weight.
      const branch = (tag: string): GraphProto => {
        const g = newGraph({ name: tag });
        g.initializer.push(floatTensor(`w_${tag}`, [10, 6], rnd(rng, 60)));
        g.node.push(newNode({ opType: 'MatMul', name: `mm_${tag}`, input: ['x', 'w_outer'], output: [`h_${tag}`] }));
        g.node.push(newNode({ opType: 'MatMul', name: `mm2_${tag}`, input: [`h_${tag}`, `w_${tag}`], output: [`y_${tag}`] }));
        g.output.push(valueInfo(`y_${tag}`, [2, 6]));
        return g;
      };
      const b = new ModelBuilder({ opset: 13 });
      b.input('cond', [], DataType.BOOL);
      b.input('x', [2, 8]);
      b.init('w_outer', [8, 10], rnd(rng, 80));
      b.graph.node.push(newNode({
        opType: 'If', name: 'if', input: ['cond'], output: ['y'],
        attribute: [newAttribute({ name: 'then_branch', type: AttributeType.GRAPH, g: branch('then') }), newAttribute({ name: 'else_branch', type: AttributeType.GRAPH, g: branch('else') })],
      }));
      b.output('y', [2, 6]);
      return b.build();
    }
    case 'constw': {
      // Weights in Constant nodes behind Identity (as the PaddleOCR models ship them).
      const b = new ModelBuilder({ opset: 11 });
      const x = b.input('x', [1, 16]);
      const c = b.node('Constant', [], { value: newAttribute({ name: 'value', type: AttributeType.TENSOR, t: floatTensor('cw', [16, 12], rnd(rng, 192)) }) }, { name: 'const_w' });
      const id = b.node('Identity', [c], {}, { name: 'id_w' });
      const h = b.node('MatMul', [x, id], {}, { name: 'mm' });
      const c2 = b.node('Constant', [], { value: newAttribute({ name: 'value', type: AttributeType.TENSOR, t: floatTensor('cw2', [12, 4], rnd(rng, 48)) }) }, { name: 'const_w2' });
      const y = b.node('MatMul', [h, c2], {}, { name: 'mm2' });
      b.output(y, [1, 4]);
      return b.build();
    }
    case 'ir4': {
      // Old IR: initializers also listed as graph inputs; Gemm needs C before opset 11.
      const b = new ModelBuilder({ opset: 9, irVersion: 4 });
      const x = b.input('x', [3, 20]);
      b.input('w', [20, 10]);
      b.input('c', [10]);
      b.init('w', [20, 10], rnd(rng, 200));
      b.init('c', [10], rnd(rng, 10));
      const y = b.node('Gemm', [x, 'w', 'c'], {}, { name: 'gemm' });
      b.output(y, [3, 10]);
      return b.build();
    }
    case 'shared': {
      // One weight read by two MatMuls (decomposed once) and by a transposed Gemm.
      const b = new ModelBuilder({ opset: 13 });
      const x = b.input('x', [2, 12]);
      const w = b.init('w', [12, 12], rnd(rng, 144));
      const a = b.node('MatMul', [x, w], {}, { name: 'mm_a' });
      const c = b.node('MatMul', [a, w], {}, { name: 'mm_b' });
      const d = b.node('Gemm', [c, w], { transB: 1, alpha: { float: 0.5 } }, { name: 'gemm_c' });
      b.output(d, [2, 12]);
      return b.build();
    }
    default: throw new Error(`not a synthetic base: ${base}`);
  }
}

const baseCache = new Map<Base, Uint8Array>();

/** The base model's bytes (real file or encoded synthetic model). */
export function baseBytes(base: Base): Uint8Array {
  let b = baseCache.get(base);
  if (!b) {
    b = (REAL_BASES as readonly string[]).includes(base)
      ? new Uint8Array(fs.readFileSync(REAL_MODELS[base as 'wake' | 'cls' | 'vad'].path))
      : encodeModel(buildSynthetic(base));
    baseCache.set(base, b);
  }
  return b;
}

/** --shape / --input arguments for a base (value files written to `dir`). */
export function baseArgs(base: Base, dir: string): string[] {
  if ((REAL_BASES as readonly string[]).includes(base)) return realModelArgs(base as 'wake' | 'cls' | 'vad', dir);
  return [];
}

// ---- wire-level tree ---------------------------------------------------------------------

/** One field occurrence in the encoded bytes; LEN fields of known message type have children. */
interface WNode {
  start: number; // first byte of the tag
  valueStart: number; // first byte after the tag (length varint for LEN)
  payloadStart: number; // LEN: first payload byte; others: = valueStart
  end: number; // one past the last byte
  wt: number;
  no: number;
  kind?: FieldSpec['kind'];
  children?: WNode[];
}

function readVarint(b: Uint8Array, pos: number, end: number): [number, number] | undefined {
  let v = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) return undefined;
    const x = b[pos++];
    v += (x & 0x7f) * mul;
    mul *= 128;
    if ((x & 0x80) === 0) return [v, pos];
  }
  return undefined;
}

const fieldMap = new Map<MessageName, Map<number, FieldSpec>>();
function fieldsOf(m: MessageName): Map<number, FieldSpec> {
  let f = fieldMap.get(m);
  if (!f) { f = new Map(SCHEMA[m].map((x) => [x.no, x])); fieldMap.set(m, f); }
  return f;
}

/** Parses a message region into field nodes, descending into known sub-messages; stops at the first inconsistency. */
function parseTree(b: Uint8Array, start: number, end: number, m: MessageName | undefined, depth = 0): WNode[] {
  const out: WNode[] = [];
  let pos = start;
  while (pos < end) {
    const t = readVarint(b, pos, end);
    if (!t) break;
    const [tag, vs] = t;
    const wt = tag % 8;
    const no = Math.floor(tag / 8);
    const spec = m ? fieldsOf(m).get(no) : undefined;
    let node: WNode;
    if (wt === 0) {
      const v = readVarint(b, vs, end);
      if (!v) break;
      node = { start: pos, valueStart: vs, payloadStart: vs, end: v[1], wt, no, kind: spec?.kind };
    } else if (wt === 1 || wt === 5) {
      const e = vs + (wt === 1 ? 8 : 4);
      if (e > end) break;
      node = { start: pos, valueStart: vs, payloadStart: vs, end: e, wt, no, kind: spec?.kind };
    } else if (wt === 2) {
      const l = readVarint(b, vs, end);
      if (!l || l[1] + l[0] > end) break;
      node = { start: pos, valueStart: vs, payloadStart: l[1], end: l[1] + l[0], wt, no, kind: spec?.kind };
      if (spec && spec.kind in SCHEMA && depth < 64) node.children = parseTree(b, node.payloadStart, node.end, spec.kind as MessageName, depth + 1);
    } else {
      break;
    }
    out.push(node);
    pos = node.end;
  }
  return out;
}

function flatten(nodes: readonly WNode[], into: WNode[] = []): WNode[] {
  for (const n of nodes) { into.push(n); if (n.children) flatten(n.children, into); }
  return into;
}

function varintBytes(v: bigint): Uint8Array {
  const w = new Writer();
  w.int64(v);
  return concat(w.finish());
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/**
 * Re-encodes the tree with `target` replaced by `replacement` (its full bytes, tag
 * included), fixing the length prefix of every enclosing message.
 */
function rebuild(b: Uint8Array, nodes: readonly WNode[], regionStart: number, regionEnd: number, target: WNode, replacement: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let pos = regionStart;
  for (const n of nodes) {
    parts.push(b.subarray(pos, n.start));
    if (n === target) {
      parts.push(replacement);
    } else if (n.children && contains(n, target)) {
      const inner = rebuild(b, n.children, n.payloadStart, n.end, target, replacement);
      parts.push(b.subarray(n.start, n.valueStart), varintBytes(BigInt(inner.length)), inner);
    } else {
      parts.push(b.subarray(n.start, n.end));
    }
    pos = n.end;
  }
  parts.push(b.subarray(pos, regionEnd));
  return concat(parts);
}

const contains = (outer: WNode, inner: WNode): boolean => inner.start >= outer.payloadStart && inner.end <= outer.end;

// ---- byte mutations ----------------------------------------------------------------------

type ByteMutation = (b: Uint8Array, rng: Rng, tree: WNode[]) => { bytes: Uint8Array; desc: string } | undefined;

const EXTREME_VARINTS: bigint[] = [0n, 1n, -1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n, 2n ** 53n, 2n ** 63n - 1n, -(2n ** 63n), 99n, 4096n];

function pickStructural(rng: Rng, all: WNode[]): WNode | undefined {
  return all.length ? all[rng.int(all.length)] : undefined;
}

export const BYTE_MUTATIONS: Record<string, ByteMutation> = {
  bitflip(b, rng, tree) {
    const out = b.slice();
    const all = flatten(tree);
    const n = 1 + rng.int(6);
    const at: string[] = [];
    for (let i = 0; i < n; i++) {
      // Half the flips land in tags and length prefixes (most bytes are tensor payload).
      let pos: number;
      const node = rng.next() < 0.5 ? pickStructural(rng, all) : undefined;
      if (node) pos = node.start + rng.int(Math.max(1, node.payloadStart - node.start));
      else pos = rng.int(out.length);
      const bit = rng.int(8);
      out[pos] ^= 1 << bit;
      at.push(`${pos}.${bit}`);
    }
    return { bytes: out, desc: `bitflip ${at.join(',')}` };
  },
  truncate(b, rng, tree) {
    const all = flatten(tree);
    const node = rng.next() < 0.5 ? pickStructural(rng, all) : undefined;
    const cut = node ? Math.max(0, Math.min(b.length - 1, node.start + rng.int(3) - 1)) : rng.int(b.length);
    return { bytes: b.slice(0, cut), desc: `truncate to ${cut} of ${b.length}` };
  },
  wiretype(b, rng, tree) {
    const node = pickStructural(rng, flatten(tree));
    if (!node) return undefined;
    const out = b.slice();
    let wt = rng.int(8);
    if (wt === node.wt) wt = (wt + 1) % 8;
    out[node.start] = (out[node.start] & ~7) | wt;
    return { bytes: out, desc: `wiretype field ${node.no}@${node.start} ${node.wt}->${wt}` };
  },
  retype(b, rng, tree) {
    // A valid protobuf whose field has the wrong wire type for the schema.
    const node = pickStructural(rng, flatten(tree));
    if (!node) return undefined;
    const choices = [0, 1, 2, 5].filter((x) => x !== node.wt);
    const wt = choices[rng.int(choices.length)];
    const tag = varintBytes(BigInt(node.no * 8 + wt));
    const value = wt === 0 ? varintBytes(BigInt(rng.int(1000)))
      : wt === 1 ? new Uint8Array(8).fill(rng.int(256))
        : wt === 5 ? new Uint8Array(4).fill(rng.int(256))
          : concat([varintBytes(BigInt(node.end - node.payloadStart)), b.subarray(node.payloadStart, node.end)]);
    return { bytes: rebuild(b, tree, 0, b.length, node, concat([tag, value])), desc: `retype field ${node.no}@${node.start} ${node.wt}->${wt}` };
  },
  length(b, rng, tree) {
    const lens = flatten(tree).filter((n) => n.wt === 2);
    const node = pickStructural(rng, lens);
    if (!node) return undefined;
    const out = b.slice();
    const nbytes = node.payloadStart - node.valueStart;
    const old = node.end - node.payloadStart;
    const max = Math.min(2 ** (7 * nbytes) - 1, 2 ** 31);
    const v = rng.next() < 0.5 ? Math.max(0, Math.min(max, old + (rng.next() < 0.5 ? -1 : 1) * (1 + rng.int(4)))) : rng.int(max + 1);
    let x = v;
    for (let i = 0; i < nbytes; i++) {
      out[node.valueStart + i] = (x & 0x7f) | (i < nbytes - 1 ? 0x80 : 0);
      x = Math.floor(x / 128);
    }
    return { bytes: out, desc: `length field ${node.no}@${node.start} ${old}->${v}` };
  },
  varint(b, rng, tree) {
    // Any varint field (dims, data_type, versions, attribute ints, …) to an extreme value.
    const vs = flatten(tree).filter((n) => n.wt === 0);
    const node = pickStructural(rng, vs);
    if (!node) return undefined;
    const v = EXTREME_VARINTS[rng.int(EXTREME_VARINTS.length)];
    const repl = concat([b.subarray(node.start, node.valueStart), varintBytes(v)]);
    return { bytes: rebuild(b, tree, 0, b.length, node, repl), desc: `varint field ${node.no}(${node.kind ?? '?'})@${node.start} -> ${v}` };
  },
  splice(b, rng, tree) {
    const all = flatten(tree);
    const node = pickStructural(rng, all);
    if (!node) return undefined;
    if (rng.next() < 0.5) {
      // Drop the field (a valid protobuf missing something the schema may need).
      return { bytes: rebuild(b, tree, 0, b.length, node, new Uint8Array(0)), desc: `drop field ${node.no}@${node.start}` };
    }
    const copy = b.subarray(node.start, node.end);
    return { bytes: rebuild(b, tree, 0, b.length, node, concat([copy, copy])), desc: `duplicate field ${node.no}@${node.start}` };
  },
  zero(b, rng) {
    const out = b.slice();
    const at = rng.int(out.length);
    const n = 1 + rng.int(16);
    out.fill(0, at, Math.min(out.length, at + n));
    return { bytes: out, desc: `zero ${n} bytes at ${at}` };
  },
};

// ---- struct mutations --------------------------------------------------------------------

interface Ctx { model: ModelProto; rng: Rng }
type StructMutation = (c: Ctx) => string | undefined;

function graphsOf(m: ModelProto): GraphProto[] {
  const out: GraphProto[] = [];
  const visit = (g: GraphProto): void => {
    out.push(g);
    for (const n of g.node) for (const a of n.attribute) { if (a.g) visit(a.g); for (const s of a.graphs) visit(s); }
  };
  if (m.graph) visit(m.graph);
  return out;
}

function nodesOf(m: ModelProto): { g: GraphProto; n: NodeProto; i: number }[] {
  return graphsOf(m).flatMap((g) => g.node.map((n, i) => ({ g, n, i })));
}

/** Initializers and Constant-node tensors, anywhere. */
function tensorsOf(m: ModelProto): { t: TensorProto; g: GraphProto; where: string }[] {
  const out: { t: TensorProto; g: GraphProto; where: string }[] = [];
  for (const g of graphsOf(m)) {
    for (const t of g.initializer) out.push({ t, g, where: `initializer ${t.name}` });
    for (const n of g.node) for (const a of n.attribute) if (a.t) out.push({ t: a.t, g, where: `${n.opType} ${n.name ?? ''}.${a.name}` });
  }
  return out;
}

const pick = <T>(rng: Rng, xs: readonly T[]): T | undefined => (xs.length ? xs[rng.int(xs.length)] : undefined);

const floatTensors = (m: ModelProto) => tensorsOf(m).filter(({ t }) => (t.dataType === DataType.FLOAT) && t.dims.length > 0);

const HUGE = [2 ** 31, 2 ** 32 + 1, 2 ** 40, 2 ** 53 - 1, 1e15, 65536 * 65536];

/** Rewrites a float tensor's payload with `fn` applied to its values (raw_data or float_data). */
function editFloats(t: TensorProto, fn: (v: Float32Array) => void): boolean {
  if (t.rawData && t.rawData.length % 4 === 0 && t.rawData.length > 0) {
    const v = new Float32Array(t.rawData.slice().buffer);
    fn(v);
    t.rawData = new Uint8Array(v.buffer);
    return true;
  }
  if (t.floatData && t.floatData.length > 0) {
    const v = t.floatData.slice();
    fn(v);
    t.floatData = v;
    return true;
  }
  return false;
}

function intAttrOf(name: string, v: bigint): AttributeProto { return newAttribute({ name, type: AttributeType.INT, i: v }); }

export const STRUCT_MUTATIONS: Record<string, StructMutation> = {
  'dims-mismatch'({ model, rng }) {
    const x = pick(rng, tensorsOf(model).filter(({ t }) => t.dims.length > 0));
    if (!x) return undefined;
    const k = rng.int(x.t.dims.length);
    const before = x.t.dims.join('x');
    if (!Number.isSafeInteger(x.t.dims[k] + 2)) return undefined;
    switch (rng.int(4)) {
      case 0: x.t.dims[k] += 1; break;
      case 1: x.t.dims[k] = Math.max(0, x.t.dims[k] - 1); break;
      case 2: x.t.dims.push(2); break;
      default: x.t.dims.pop(); break;
    }
    return `${x.where} dims ${before} -> ${x.t.dims.join('x')}`;
  },
  'huge-dim'({ model, rng }) {
    const x = pick(rng, tensorsOf(model));
    if (!x) return undefined;
    const h = HUGE[rng.int(HUGE.length)];
    if (rng.next() < 0.3) x.t.dims = [h, h];
    else if (x.t.dims.length === 0) x.t.dims = [h];
    else x.t.dims[rng.int(x.t.dims.length)] = h;
    return `${x.where} dims -> ${x.t.dims.join('x')}`;
  },
  'negative-dim'({ model, rng }) {
    const v = [-1, -2, -(2 ** 40), -(2 ** 53 - 1)][rng.int(4)];
    if (rng.next() < 0.5) {
      const x = pick(rng, tensorsOf(model).filter(({ t }) => t.dims.length > 0));
      if (!x) return undefined;
      x.t.dims[rng.int(x.t.dims.length)] = v;
      return `${x.where} dims -> ${x.t.dims.join('x')}`;
    }
    const vi = pick(rng, graphsOf(model).flatMap((g) => [...g.input, ...g.output, ...g.valueInfo]).filter((x) => x.type?.tensorType?.shape?.dim.length));
    if (!vi) return undefined;
    const d = vi.type!.tensorType!.shape!.dim;
    d[rng.int(d.length)] = { dimValue: v };
    return `value_info ${vi.name} dim -> ${v}`;
  },
  'input-dims'({ model, rng }) {
    const g = model.graph!;
    const vi = pick(rng, g.input.filter((x) => x.type?.tensorType));
    if (!vi) return undefined;
    const tt = vi.type!.tensorType!;
    const choice = rng.int(6);
    const dims = tt.shape?.dim ?? [];
    if (choice === 0) tt.shape = { dim: [{ dimValue: 2 ** 40 }, { dimValue: 2 ** 40 }] };
    else if (choice === 1) tt.shape = { dim: dims.map(() => ({ dimValue: 100_000 })) };
    else if (choice === 2) tt.shape = { dim: dims.map(() => ({ dimValue: 0 })) };
    else if (choice === 3) tt.shape = { dim: [...dims, { dimValue: 3 }] };
    else if (choice === 4) tt.shape = { dim: dims.map((_, i) => ({ dimParam: `d${i}` })) };
    else tt.shape = { dim: Array.from({ length: 40 }, () => ({ dimValue: 2 })) };
    return `input ${vi.name} dims -> [${tt.shape.dim.map((d) => d.dimValue ?? d.dimParam).join(',')}]`;
  },
  'dup-name'({ model, rng }) {
    const g = pick(rng, graphsOf(model))!;
    switch (rng.int(4)) {
      case 0: {
        const [a, b] = [pick(rng, g.node), pick(rng, g.node)];
        if (!a || !b || !a.output[0] || !b.output[0]) return undefined;
        b.output[0] = a.output[0];
        return `node ${b.name} output renamed to ${a.output[0]} (two producers)`;
      }
      case 1: {
        const t = pick(rng, g.initializer);
        if (!t) return undefined;
        g.initializer.push({ ...t, dims: [...t.dims, 1] });
        return `initializer ${t.name} duplicated with dims ${[...t.dims, 1].join('x')}`;
      }
      case 2: {
        const i = pick(rng, g.input);
        if (!i) return undefined;
        g.input.push({ ...i });
        return `graph input ${i.name} duplicated`;
      }
      default: {
        const t = pick(rng, g.initializer);
        const n = pick(rng, g.node);
        if (!t || !n || !n.output[0]) return undefined;
        n.output[0] = t.name ?? '';
        return `node ${n.name} output renamed to initializer ${t.name}`;
      }
    }
  },
  dangling({ model, rng }) {
    const x = pick(rng, nodesOf(model).filter(({ n }) => n.input.length > 0));
    if (!x) return undefined;
    if (rng.next() < 0.2) {
      const o = pick(rng, x.g.output);
      if (o) { o.name = `nowhere_${rng.int(100)}`; return `graph output renamed to ${o.name}`; }
    }
    const k = rng.int(x.n.input.length);
    x.n.input[k] = rng.next() < 0.2 ? '' : `missing_${rng.int(1000)}`;
    return `node ${x.n.name} input ${k} -> "${x.n.input[k]}"`;
  },
  cycle({ model, rng }) {
    const g = pick(rng, graphsOf(model).filter((x) => x.node.length > 0))!;
    if (!g) return undefined;
    const i = rng.int(g.node.length);
    const a = g.node[i];
    if (rng.next() < 0.3 || g.node.length < 2) {
      if (!a.output[0]) return undefined;
      a.input[0] = a.output[0];
      return `node ${a.name} reads its own output`;
    }
    const j = i + 1 + rng.int(Math.max(1, g.node.length - i - 1));
    const b = g.node[Math.min(j, g.node.length - 1)];
    if (!b.output[0] || a.input.length === 0) return undefined;
    a.input[rng.int(a.input.length)] = b.output[0];
    return `node ${a.name} reads ${b.output[0]} (of a later node)`;
  },
  'missing-init'({ model, rng }) {
    const g = pick(rng, graphsOf(model).filter((x) => x.initializer.length > 0));
    if (!g) return undefined;
    const k = rng.int(g.initializer.length);
    const [t] = g.initializer.splice(k, 1);
    return `initializer ${t.name} removed`;
  },
  'unknown-op'({ model, rng }) {
    const x = pick(rng, nodesOf(model));
    if (!x) return undefined;
    const op = ['NoSuchOp', '', 'matmul', 'Conv2D', 'MatMul ', 'If'][rng.int(6)];
    const old = x.n.opType;
    x.n.opType = op;
    return `node ${x.n.name} op ${old} -> "${op}"`;
  },
  'unknown-domain'({ model, rng }) {
    const x = pick(rng, nodesOf(model));
    if (!x) return undefined;
    const d = ['com.example.nope', 'ai.onnx.ml', 'com.microsoft', 'ai.onnx', ' '][rng.int(5)];
    x.n.domain = d;
    if (rng.next() < 0.5) model.opsetImport.push({ domain: d, version: 1 + rng.int(3) });
    return `node ${x.n.name} domain -> "${d}"`;
  },
  ir({ model, rng }) {
    const v = [-1, 0, 1, 2, 3, 14, 99, 2 ** 31, 2 ** 53 - 1, undefined][rng.int(10)];
    if (v === undefined) delete model.irVersion; else model.irVersion = v;
    return `ir_version -> ${v}`;
  },
  opset({ model, rng }) {
    const choice = rng.int(4);
    const def = model.opsetImport.find((o) => !o.domain);
    if (choice === 0) { model.opsetImport = model.opsetImport.filter((o) => o !== def); return 'default opset import removed'; }
    if (choice === 1) { model.opsetImport.push({ domain: '', version: 7 }); return 'default opset imported twice'; }
    const v = [-5, 0, 1, 6, 7, 23, 24, 30, 1000, 2 ** 40][rng.int(10)];
    if (def) def.version = v; else model.opsetImport.push({ domain: '', version: v });
    return `opset -> ${v}`;
  },
  'nan-weight'({ model, rng }) {
    const x = pick(rng, floatTensors(model));
    if (!x) return undefined;
    const special = [NaN, Infinity, -Infinity, 3.4e38, 1e-45][rng.int(5)];
    const all = rng.next() < 0.2;
    const ok = editFloats(x.t, (v) => {
      if (all) v.fill(special);
      else for (let k = 0; k < 1 + rng.int(3); k++) v[rng.int(v.length)] = special;
    });
    return ok ? `${x.where}: ${all ? 'all' : 'some'} values -> ${special}` : undefined;
  },
  datatype({ model, rng }) {
    const x = pick(rng, tensorsOf(model));
    if (!x) return undefined;
    const dt = [0, 8, 99, 7, 10, 11, 16, 21, 14, 2, 1000][rng.int(11)];
    const old = x.t.dataType;
    x.t.dataType = dt;
    return `${x.where} data_type ${old} -> ${dt}`;
  },
  payload({ model, rng }) {
    const x = pick(rng, floatTensors(model).filter(({ t }) => t.rawData && t.rawData.length % 4 === 0));
    if (!x) return undefined;
    const raw = x.t.rawData!;
    switch (rng.int(5)) {
      case 0: x.t.floatData = new Float32Array(raw.slice().buffer); delete x.t.rawData; return `${x.where}: raw_data -> float_data`;
      case 1: x.t.floatData = new Float32Array([1, 2, 3]); return `${x.where}: float_data next to raw_data`;
      case 2: x.t.rawData = new Uint8Array(0); return `${x.where}: empty raw_data`;
      case 3: x.t.int32Data = new Int32Array(raw.length / 4); delete x.t.rawData; return `${x.where}: int32_data for a FLOAT tensor`;
      default: x.t.rawData = raw.subarray(0, raw.length - 1 - rng.int(Math.max(1, raw.length - 1))); return `${x.where}: raw_data cut to ${x.t.rawData.length}`;
    }
  },
  attr({ model, rng }) {
    const x = pick(rng, nodesOf(model));
    if (!x) return undefined;
    const n = x.n;
    const names = ['group', 'transB', 'transA', 'strides', 'pads', 'kernel_shape', 'dilations', 'alpha', 'beta', 'auto_pad', 'axis'];
    const name = pick(rng, [...n.attribute.map((a) => a.name ?? ''), ...names])!;
    n.attribute = n.attribute.filter((a) => a.name !== name);
    let a: AttributeProto;
    switch (rng.int(9)) {
      case 0: a = intAttrOf(name, [0n, -1n, 7n, 2n ** 40n, -(2n ** 63n)][rng.int(5)]); break;
      case 1: a = newAttribute({ name, type: AttributeType.INTS, ints: [[0n], [-1n, -1n], [2n ** 40n, 1n], [], [1n, 1n, 1n, 1n, 1n, 1n, 1n]][rng.int(5)] }); break;
      case 2: a = newAttribute({ name, type: AttributeType.FLOAT, f: [NaN, Infinity, -0, 1e30][rng.int(4)] }); break;
      case 3: a = newAttribute({ name, type: AttributeType.STRING, s: new TextEncoder().encode(['SAME_UPPER', 'VALID', 'NOTSET', 'bogus', ''][rng.int(5)]) }); break;
      case 4: a = newAttribute({ name, type: AttributeType.TENSOR, t: floatTensor('t', [2], [1, 2]) }); break;
      case 5: a = newAttribute({ name, type: AttributeType.INT }); break; // type without a value
      case 6: a = newAttribute({ name, type: 99, i: 1n }); break;
      case 7: return `node ${n.name}: attribute ${name} removed`;
      default: a = newAttribute({ name, type: AttributeType.GRAPH, g: newGraph({ name: 'junk' }) }); break;
    }
    n.attribute.push(a);
    if (rng.next() < 0.2) n.attribute.push({ ...a });
    return `node ${n.name}: attribute ${name} -> type ${a.type}`;
  },
  'graph-shape'({ model, rng }) {
    const g = pick(rng, graphsOf(model))!;
    switch (rng.int(6)) {
      case 0: g.output = []; return `graph ${g.name}: no outputs`;
      case 1: g.node = []; return `graph ${g.name}: no nodes`;
      case 2: g.input = []; return `graph ${g.name}: no inputs`;
      case 3: { const n = pick(rng, g.node); if (!n) return undefined; n.output = []; return `node ${n.name}: no outputs`; }
      case 4: { const n = pick(rng, g.node); if (!n) return undefined; n.input = []; return `node ${n.name}: no inputs`; }
      default: g.node.reverse(); return `graph ${g.name}: nodes reversed`;
    }
  },
  subgraph({ model, rng }) {
    const x = pick(rng, nodesOf(model).filter(({ n }) => n.attribute.some((a) => a.g)));
    if (!x) {
      // Wrap the main graph's first node in an If whose branch reads an outer name that does not exist.
      const g = model.graph!;
      const body = newGraph({ name: 'b', node: [newNode({ opType: 'Identity', input: ['nowhere'], output: ['bo'] })], output: [valueInfo('bo')] });
      g.node.unshift(newNode({ opType: 'If', name: 'fuzz_if', input: [g.input[0]?.name ?? 'x'], output: ['fuzz_if_out'], attribute: [
        newAttribute({ name: 'then_branch', type: AttributeType.GRAPH, g: body }), newAttribute({ name: 'else_branch', type: AttributeType.GRAPH, g: body }),
      ] }));
      return 'If with a branch reading an undefined outer value added';
    }
    const a = pick(rng, x.n.attribute.filter((y) => y.g))!;
    switch (rng.int(5)) {
      case 0: x.n.attribute = x.n.attribute.filter((y) => y !== a); return `${x.n.name}: attribute ${a.name} removed`;
      case 1: a.graphs = [a.g!, a.g!]; delete a.g; a.type = AttributeType.GRAPHS; return `${x.n.name}: ${a.name} as GRAPHS`;
      case 2: a.g!.output = a.g!.output.map((o) => ({ ...o, name: 'not_defined' })); return `${x.n.name}: ${a.name} output undefined`;
      case 3: {
        // Nest the branch inside itself 20 levels deep.
        let g = a.g!;
        for (let d = 0; d < 20; d++) {
          const inner = g;
          g = newGraph({ name: `nest${d}`, node: [newNode({ opType: 'If', input: [model.graph!.input[0]?.name ?? 'cond'], output: [inner.output[0]?.name ?? 'o'], attribute: [
            // Only one branch nests (sharing `inner` in both would double the model per level).
            newAttribute({ name: 'then_branch', type: AttributeType.GRAPH, g: inner }),
            newAttribute({ name: 'else_branch', type: AttributeType.GRAPH, g: newGraph({ name: `e${d}`, node: [newNode({ opType: 'Constant', output: [inner.output[0]?.name ?? 'o'], attribute: [newAttribute({ name: 'value', type: AttributeType.TENSOR, t: floatTensor('c', [2, 6], new Float32Array(12)) })] })], output: inner.output }) }),
          ] })], output: inner.output });
        }
        a.g = g;
        return `${x.n.name}: ${a.name} nested 20 deep`;
      }
      default: a.g!.initializer = []; return `${x.n.name}: ${a.name} lost its initializers`;
    }
  },
  'weight-rank'({ model, rng }) {
    const x = pick(rng, floatTensors(model));
    if (!x) return undefined;
    const n = x.t.dims.reduce((p, d) => p * d, 1);
    if (!Number.isSafeInteger(n) || n < 0) return undefined;
    const before = x.t.dims.join('x');
    switch (rng.int(5)) {
      case 0: x.t.dims = [n]; break;
      case 1: x.t.dims = [...x.t.dims].reverse(); break;
      case 2: x.t.dims = [1, ...x.t.dims]; break;
      case 3: x.t.dims = n % 2 === 0 ? [2, n / 2, 1] : [n, 1, 1]; break;
      default:
        // Zero-size weight.
        x.t.dims = [0, ...x.t.dims.slice(1)];
        x.t.rawData = new Uint8Array(0);
        delete x.t.floatData;
        break;
    }
    return `${x.where} dims ${before} -> ${x.t.dims.join('x')} (data kept)`;
  },
  'value-info'({ model, rng }) {
    const g = pick(rng, graphsOf(model))!;
    const n = pick(rng, g.node);
    const name = n?.output[0] ?? g.input[0]?.name;
    if (!name) return undefined;
    const elem = [0, 99, 7, 8, 1][rng.int(5)];
    const vi: ValueInfoProto = valueInfo(name, [3, 5, 7].slice(0, 1 + rng.int(3)), elem);
    if (rng.next() < 0.5) g.valueInfo.push(vi);
    else { const i = g.input.findIndex((v) => v.name === name); if (i >= 0) g.input[i] = vi; else g.valueInfo.push(vi); }
    return `value_info ${name}: elem ${elem}, dims ${vi.type!.tensorType!.shape!.dim.map((d) => d.dimValue).join('x')}`;
  },
  'external-flag'({ model, rng }) {
    const x = pick(rng, tensorsOf(model));
    if (!x) return undefined;
    if (rng.next() < 0.5) {
      x.t.dataLocation = 1; // EXTERNAL with no entries, payload still inline
      return `${x.where}: data_location EXTERNAL without entries`;
    }
    x.t.externalData = [{ key: 'location', value: 'nope.bin' }];
    return `${x.where}: external_data entries but data_location DEFAULT`;
  },
  'string-weight'({ model, rng }) {
    const x = pick(rng, tensorsOf(model));
    if (!x) return undefined;
    x.t.dataType = DataType.STRING;
    delete x.t.rawData;
    delete x.t.floatData;
    const n = x.t.dims.reduce((p, d) => p * d, 1);
    x.t.stringData = Array.from({ length: Math.min(n, 50) }, (_, i) => new TextEncoder().encode(`s${i}`));
    return `${x.where}: STRING with ${x.t.stringData.length} strings`;
  },
  'sparse-init'({ model, rng }) {
    const g = model.graph!;
    const t = pick(rng, g.initializer);
    if (!t) return undefined;
    g.initializer = g.initializer.filter((x) => x !== t);
    const bad = rng.next() < 0.5;
    g.sparseInitializer.push({
      values: { ...t, dims: [2] , rawData: new Uint8Array(new Float32Array([1, 2]).buffer) },
      indices: newTensor({ name: `${t.name}_idx`, dims: [2], dataType: DataType.INT64, int64Data: BigInt64Array.from(bad ? [5n, 2n ** 40n] : [0n, 1n]) }),
      dims: [...t.dims],
    });
    return `initializer ${t.name} -> sparse (${bad ? 'bad' : 'good'} indices)`;
  },
  'recursive-function'({ model }) {
    // A model-local function that calls itself, used by a node.
    model.opsetImport.push({ domain: 'fuzz.fn', version: 1 });
    model.functions.push({
      name: 'F', domain: 'fuzz.fn', input: ['a'], output: ['b'], attribute: [], attributeProto: [],
      node: [newNode({ opType: 'F', domain: 'fuzz.fn', input: ['a'], output: ['b'] })],
      opsetImport: [{ domain: '', version: 13 }, { domain: 'fuzz.fn', version: 1 }], valueInfo: [], metadataProps: [],
    });
    const g = model.graph!;
    const first = g.input[0]?.name;
    if (!first) return undefined;
    g.node.push(newNode({ opType: 'F', domain: 'fuzz.fn', name: 'call_f', input: [first], output: ['f_out'] }));
    g.output.push(valueInfo('f_out'));
    return 'recursive model-local function F';
  },
  'many-nodes'({ model, rng }) {
    // A long Identity chain in front of a weight (resolveConstant follows Identity chains).
    const x = pick(rng, nodesOf(model).filter(({ n }) => (n.opType === 'MatMul' || n.opType === 'Gemm' || n.opType === 'Conv') && n.input[1]));
    if (!x) return undefined;
    const len = [100, 5000, 12_000][rng.int(3)];
    let prev = x.n.input[1];
    const chain: NodeProto[] = [];
    for (let k = 0; k < len; k++) {
      const o = `idchain_${k}`;
      chain.push(newNode({ opType: 'Identity', name: o, input: [prev], output: [o] }));
      prev = o;
    }
    x.n.input[1] = prev;
    x.g.node.splice(x.i, 0, ...chain);
    return `${len} Identity nodes before ${x.n.name}'s weight`;
  },
};

// ---- external-data mutations -------------------------------------------------------------

type ExternalMutation = (c: { model: ModelProto; rng: Rng; dir: string; dataFile: string; outside: string }) => string | undefined;

function externalTensors(m: ModelProto): TensorProto[] {
  return tensorsOf(m).map(({ t }) => t).filter((t) => t.dataLocation === 1);
}

function setEntry(t: TensorProto, key: string, value: string | undefined): void {
  t.externalData = t.externalData.filter((e) => e.key !== key);
  if (value !== undefined) t.externalData.push({ key, value });
}

const entryOf = (t: TensorProto, key: string): string | undefined => t.externalData.find((e) => e.key === key)?.value;

export const EXTERNAL_MUTATIONS: Record<string, ExternalMutation> = {
  outside({ model, rng, outside }) {
    const t = pick(rng, externalTensors(model));
    if (!t) return undefined;
    const loc = ['../outside.bin', '../../outside.bin', 'sub/../../outside.bin', '..\\outside.bin', '/etc/hostname', path.resolve(outside), 'C:\\x.bin', './../outside.bin'][rng.int(8)];
    setEntry(t, 'location', loc);
    setEntry(t, 'offset', '0');
    return `${t.name}: location -> ${loc}`;
  },
  symlink({ model, rng, dir, outside, dataFile }) {
    const t = pick(rng, externalTensors(model));
    if (!t) return undefined;
    const n = fs.readdirSync(dir).length;
    const loop = path.join(dir, `loop${n}.bin`);
    const target = [outside, '/dev/zero', loop, dataFile, '/proc/self/mem'][rng.int(5)];
    const link = path.join(dir, `link${n}.bin`);
    fs.symlinkSync(target, link);
    if (target === loop) fs.symlinkSync(link, loop);
    setEntry(t, 'location', path.basename(link));
    return `${t.name}: location -> symlink to ${target}`;
  },
  special({ model, rng, dir }) {
    const t = pick(rng, externalTensors(model));
    if (!t) return undefined;
    const what = rng.int(4);
    const n = fs.readdirSync(dir).length;
    if (what === 0) { fs.mkdirSync(path.join(dir, `adir${n}`)); setEntry(t, 'location', `adir${n}`); return `${t.name}: location is a folder`; }
    if (what === 1) { execFileSync('mkfifo', [path.join(dir, `fifo${n}.bin`)]); setEntry(t, 'location', `fifo${n}.bin`); return `${t.name}: location is a FIFO`; }
    if (what === 2) { setEntry(t, 'location', 'missing.bin'); return `${t.name}: location does not exist`; }
    setEntry(t, 'location', ['', 'a\0b', '.', 'sub/', 'in.onnx'][rng.int(5)]);
    return `${t.name}: location -> ${JSON.stringify(entryOf(t, 'location'))}`;
  },
  range({ model, rng, dataFile }) {
    const t = pick(rng, externalTensors(model));
    if (!t) return undefined;
    const size = fs.statSync(dataFile).size;
    const len = Number(entryOf(t, 'length') ?? 0);
    const choice = rng.int(9);
    const [key, v] = ([
      ['offset', String(size - 1)], ['offset', String(size)], ['offset', String(2 ** 53 - 1)], ['offset', '18446744073709551615'],
      ['offset', '-1'], ['offset', '0x10'], ['length', String(len + 1)], ['length', '0'], ['offset', ` ${4096}`],
    ] as const)[choice];
    setEntry(t, key, v);
    return `${t.name}: ${key} -> ${JSON.stringify(v)}`;
  },
  'truncate-data'({ rng, dataFile }) {
    const size = fs.statSync(dataFile).size;
    const to = rng.int(size);
    fs.truncateSync(dataFile, to);
    return `data file truncated ${size} -> ${to}`;
  },
  'huge-external'({ model, rng }) {
    const t = pick(rng, externalTensors(model));
    if (!t) return undefined;
    const h = HUGE[rng.int(HUGE.length)];
    t.dims = [h, 4];
    setEntry(t, 'length', rng.next() < 0.5 ? String(h * 16) : undefined);
    return `${t.name}: dims ${h}x4 with length ${entryOf(t, 'length') ?? '(absent)'}`;
  },
  entries({ model, rng }) {
    const t = pick(rng, externalTensors(model));
    if (!t) return undefined;
    switch (rng.int(5)) {
      case 0: t.externalData = []; return `${t.name}: no external_data entries`;
      case 1: setEntry(t, 'location', undefined); return `${t.name}: no location`;
      case 2: t.externalData.push({ key: 'location', value: '../outside.bin' }); return `${t.name}: second location entry (escaping)`;
      case 3: t.externalData.push({ key: 'checksum', value: 'zzz' }, { key: 'bogus' }); return `${t.name}: extra entries`;
      default: t.rawData = new Uint8Array(8); return `${t.name}: raw_data as well as external`;
    }
  },
  'self-data'({ model, rng }) {
    // Points at the model file itself: inside the folder, garbage weights.
    const t = pick(rng, externalTensors(model));
    if (!t) return undefined;
    setEntry(t, 'location', 'in.onnx');
    setEntry(t, 'offset', '0');
    return `${t.name}: data read from the model file itself`;
  },
  'data-bits'({ rng, dataFile }) {
    const b = fs.readFileSync(dataFile);
    for (let k = 0; k < 8; k++) b[rng.int(b.length)] ^= 1 << rng.int(8);
    fs.writeFileSync(dataFile, b);
    return 'bit flips in the data file';
  },
};

// ---- materialize -------------------------------------------------------------------------

const FAMILY_KINDS: Record<Family, string[]> = {
  bytes: Object.keys(BYTE_MUTATIONS),
  struct: Object.keys(STRUCT_MUTATIONS),
  external: Object.keys(EXTERNAL_MUTATIONS),
};

/** Seed of the i-th case of a run: mixes the run seed and the index (SplitMix-style). */
export function caseSeed(runSeed: number, i: number): number {
  let z = (runSeed * 0x9e3779b1 + i * 0x85ebca6b + 0x6d2b79f5) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x2c1b3c6d) >>> 0;
  z = Math.imul(z ^ (z >>> 12), 0x297a2d39) >>> 0;
  return (z ^ (z >>> 15)) >>> 0;
}

/** Relative weights of kinds whose cases are slow (long graphs): drawn less often. */
const KIND_WEIGHT: Record<string, number> = { 'many-nodes': 0.3 };

function chooseKinds(r: Recipe): string[] {
  if (r.kinds) return r.kinds;
  const rng = createRng(r.seed);
  const kinds = FAMILY_KINDS[r.family];
  const total = kinds.reduce((a, k) => a + (KIND_WEIGHT[k] ?? 1), 0);
  const draw = (): string => {
    let u = rng.next() * total;
    for (const k of kinds) if ((u -= KIND_WEIGHT[k] ?? 1) < 0) return k;
    return kinds[kinds.length - 1];
  };
  const n = r.family === 'bytes' ? 1 : 1 + (rng.next() < 0.3 ? 1 : 0) + (rng.next() < 0.1 ? 1 : 0);
  return Array.from({ length: n }, draw);
}

/** Stream for the k-th mutation of a recipe. */
const kindRng = (seed: number, k: number): Rng => createRng(caseSeed(seed, 1000 + k));

/**
 * Writes the case into `dir` (a fresh folder): `in.onnx`, any data files, value files for
 * --input. Deterministic in the recipe. The outside file for escape attempts is written
 * to `dir/../outside.bin` when absent.
 */
export function materialize(recipe: Recipe, dir: string): Case {
  const kinds = chooseKinds(recipe);
  const model = path.join(dir, 'in.onnx');
  const desc: string[] = [];
  const inputs = [model];
  const args = baseArgs(recipe.base, dir);
  const base = baseBytes(recipe.base);
  if (recipe.family === 'bytes') {
    let bytes = base;
    kinds.forEach((k, i) => {
      const f = BYTE_MUTATIONS[k];
      if (!f) throw new Error(`unknown byte mutation ${k}`);
      const r = f(bytes, kindRng(recipe.seed, i), parseTree(bytes, 0, bytes.length, 'ModelProto'));
      if (r) { bytes = r.bytes; desc.push(r.desc); } else desc.push(`${k}: not applicable`);
    });
    fs.writeFileSync(model, bytes);
  } else if (recipe.family === 'struct') {
    const m = decodeModel(base);
    kinds.forEach((k, i) => {
      const f = STRUCT_MUTATIONS[k];
      if (!f) throw new Error(`unknown struct mutation ${k}`);
      desc.push(f({ model: m, rng: kindRng(recipe.seed, i) }) ?? `${k}: not applicable`);
    });
    fs.writeFileSync(model, encodeModel(m));
  } else {
    const outside = path.join(path.dirname(dir), 'outside.bin');
    if (!fs.existsSync(outside)) fs.writeFileSync(outside, new Uint8Array(1 << 16).fill(0x41));
    const m0 = decodeModel(base);
    const threshold = [0, 64, 1024][createRng(recipe.seed).int(3)];
    const r = saveModel(m0, model, { externalData: { threshold } });
    const dataFile = r.externalPath ?? path.join(dir, 'in.onnx.data');
    if (!r.externalPath) fs.writeFileSync(dataFile, new Uint8Array(64));
    inputs.push(dataFile);
    const m = decodeModel(new Uint8Array(fs.readFileSync(model)));
    desc.push(`external data, threshold ${threshold}`);
    kinds.forEach((k, i) => {
      const f = EXTERNAL_MUTATIONS[k];
      if (!f) throw new Error(`unknown external mutation ${k}`);
      desc.push(f({ model: m, rng: kindRng(recipe.seed, i), dir, dataFile, outside }) ?? `${k}: not applicable`);
    });
    fs.writeFileSync(model, encodeModel(m));
  }
  return { recipe: { ...recipe, kinds }, model, inputs, args, desc };
}
