/**
 * Timed models keep their outputs inside ORT. In a model a tensor stays in ORT's arena;
 * returned, every output is copied into a fresh JS buffer each run, and past glibc's mmap
 * threshold (32 MiB) that buffer is mapped and zeroed page by page. On a 2-core AMD EPYC a
 * 64→64 3x3 conv at 512² timed 300 ms returned and 104 ms kept (its Tucker-2 chain 224
 * and 27 ms: 1.3× faster instead of 3.9×), and ISNet, whose 12 outputs include a
 * 64×512×512 feature map, 2100 → 870 ms (2.4×) returned against 1715 → 550 ms (3.1×)
 * kept. The copy costs both models the same and is not what a rewrite changes (a C++ or
 * IO-bound caller does not pay it), so latencies are timed without it: each output is
 * reduced to its first element (Flatten to [1, N], Slice [0:1]; ORT still computes every
 * node, and the Slice copies one element).
 */
import { readFileSync, statSync } from 'node:fs';
import { decodeModel, encodeModel } from '../onnx/codec.js';
import { hasExternalData } from '../onnx/walk.js';
import { freshName, namesOf } from '../onnx/names.js';
import { AttributeType, DataType, newAttribute, newNode, newTensor, newValueInfo, type ModelProto, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { ok, type Result } from '../errors.js';
import { createSession, type ModelSource, type Session, type SessionOptions } from './session.js';

/**
 * Largest model copied to keep its outputs inside. The copy is decoded and encoded in
 * memory beside ORT's own (a 2 GiB model would need several GiB more while timed), and a
 * model that large spends its time computing, not copying outputs out.
 */
export const MAX_KEPT_BYTES = 512 * 2 ** 20;

// verify/ sits below graph/ (graph/attrs.ts has these helpers): built here from the schema.
const intAttr = (name: string, v: number) => newAttribute({ name, type: AttributeType.INT, i: BigInt(v) });
const intsAttr = (name: string, v: readonly number[]) => newAttribute({ name, type: AttributeType.INTS, ints: v.map((x) => BigInt(x)) });

/** `m` with every graph output replaced by its first element, as a [1, 1] tensor (the model given is not changed). */
export function keptInside(m: ModelProto): ModelProto {
  const g = m.graph!;
  if (g.output.length === 0) return m;
  const taken = namesOf(g);
  const fresh = (base: string): string => freshName(taken, base);
  const opset = m.opsetImport.find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx')?.version ?? 1;
  const nodes: NodeProto[] = [];
  const init: TensorProto[] = [];
  // Slice-10 and later take starts, ends and axes as inputs, shared by every output.
  const bounds = opset >= 10 ? ['starts', 'ends', 'axes'].map((k) => fresh(`timing_slice_${k}`)) : [];
  [0, 1, 1].forEach((v, i) => { if (bounds[i]) init.push(newTensor({ name: bounds[i], dims: [1], dataType: DataType.INT64, int64Data: BigInt64Array.of(BigInt(v)) })); });
  const outputs = g.output.map((o) => {
    // A sequence, map or optional output is returned as it is (Flatten takes tensors only).
    if (o.type && !o.type.tensorType) return o;
    const out = o.name ?? '';
    const flat = fresh(`${out}_flat`);
    const first = fresh(`${out}_first`);
    nodes.push(newNode({ opType: 'Flatten', name: fresh('timing_flatten'), input: [out], output: [flat], attribute: [intAttr('axis', 0)] }));
    nodes.push(opset >= 10
      ? newNode({ opType: 'Slice', name: fresh('timing_slice'), input: [flat, ...bounds], output: [first] })
      : newNode({ opType: 'Slice', name: fresh('timing_slice'), input: [flat], output: [first], attribute: [intsAttr('starts', [0]), intsAttr('ends', [1]), intsAttr('axes', [1])] }));
    return newValueInfo({ name: first });
  });
  return { ...m, graph: { ...g, node: [...g.node, ...nodes], initializer: [...g.initializer, ...init], output: outputs } };
}

/** A source's model with its outputs kept inside (keptInside), or undefined when it is over MAX_KEPT_BYTES, has external data or cannot be decoded. */
function keptCopy(src: ModelSource, maxBytes: number): Uint8Array | undefined {
  try {
    if (('path' in src ? statSync(src.path).size : src.bytes.length) > maxBytes) return undefined;
    const model = decodeModel('path' in src ? readFileSync(src.path) : src.bytes);
    if (hasExternalData(model)) return undefined;
    return encodeModel(keptInside(model));
  } catch {
    return undefined;
  }
}

/**
 * The sources with their outputs kept inside, or undefined when any cannot be (over
 * MAX_KEPT_BYTES, or with external data, which loads from its path only): then all are
 * timed as they are, alike.
 */
export function keptInsideAll(sources: readonly ModelSource[], maxBytes = MAX_KEPT_BYTES): ModelSource[] | undefined {
  const out: ModelSource[] = [];
  for (const src of sources) {
    const bytes = keptCopy(src, maxBytes);
    if (!bytes) return undefined;
    out.push({ bytes });
  }
  return out;
}

/**
 * Sessions of models to time side by side: of `kept` (the models with their outputs kept
 * inside) when ORT loads every one of them, else of `plain()` (the models as they are), all
 * alike: ORT refuses some copies, e.g. an integer output at an opset whose Flatten takes
 * floats only. `outputsKept` says which. `labels` name the sessions in errors.
 */
export async function openTimed(
  kept: readonly ModelSource[] | undefined, plain: () => readonly ModelSource[], opts: SessionOptions, labels: readonly (string | undefined)[] = [],
): Promise<Result<{ sessions: Session[]; outputsKept: boolean }>> {
  const open = async (sources: readonly ModelSource[]): Promise<Result<Session[]>> => {
    const sessions: Session[] = [];
    for (const [i, src] of sources.entries()) {
      const s = await createSession(src, { ...opts, ...(labels[i] !== undefined && { label: labels[i] }) });
      if (!s.ok) {
        for (const x of sessions) await x.release();
        return s;
      }
      sessions.push(s.value);
    }
    return ok(sessions);
  };
  const k = kept ? await open(kept) : undefined;
  if (k?.ok) return ok({ sessions: k.value, outputsKept: true });
  const p = await open(plain());
  return p.ok ? ok({ sessions: p.value, outputsKept: false }) : p;
}
