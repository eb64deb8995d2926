/** Typed access to node attributes (ONNX stores ints as int64: we read them as numbers). */
import { LrError } from '../errors.js';
import { AttributeType, newAttribute, type AttributeProto, type NodeProto, type TensorProto, type GraphProto } from '../onnx/schema.js';

export function getAttr(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute.find((a) => a.name === name);
}

function toSafe(v: bigint, node: NodeProto, name: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) {
    throw new LrError('unsupported', `node ${node.name ?? node.opType}: attribute ${name} value ${v} is out of range`);
  }
  return n;
}

export function attrInt(node: NodeProto, name: string, dflt: number): number;
export function attrInt(node: NodeProto, name: string): number | undefined;
export function attrInt(node: NodeProto, name: string, dflt?: number): number | undefined {
  const a = getAttr(node, name);
  return a?.i !== undefined ? toSafe(a.i, node, name) : dflt;
}

export function attrInts(node: NodeProto, name: string): number[] | undefined {
  const a = getAttr(node, name);
  if (!a) return undefined;
  return a.ints.map((v) => toSafe(v, node, name));
}

export function attrFloat(node: NodeProto, name: string, dflt: number): number {
  const a = getAttr(node, name);
  return a?.f ?? dflt;
}

export function attrString(node: NodeProto, name: string): string | undefined {
  const a = getAttr(node, name);
  return a?.s ? new TextDecoder().decode(a.s) : undefined;
}

export function attrTensor(node: NodeProto, name: string): TensorProto | undefined {
  return getAttr(node, name)?.t;
}

/** Subgraph attributes of a node (If branches, Loop/Scan bodies), in attribute order. */
export function subgraphsOf(node: NodeProto): GraphProto[] {
  const out: GraphProto[] = [];
  for (const a of node.attribute) {
    if (a.g) out.push(a.g);
    for (const g of a.graphs) out.push(g);
  }
  return out;
}

export const intAttr = (name: string, v: number): AttributeProto =>
  newAttribute({ name, type: AttributeType.INT, i: BigInt(v) });
export const intsAttr = (name: string, v: readonly number[]): AttributeProto =>
  newAttribute({ name, type: AttributeType.INTS, ints: v.map((x) => BigInt(x)) });
export const floatAttr = (name: string, v: number): AttributeProto =>
  newAttribute({ name, type: AttributeType.FLOAT, f: v });
export const stringAttr = (name: string, v: string): AttributeProto =>
  newAttribute({ name, type: AttributeType.STRING, s: new TextEncoder().encode(v) });
export const tensorAttr = (name: string, t: TensorProto): AttributeProto =>
  newAttribute({ name, type: AttributeType.TENSOR, t });
