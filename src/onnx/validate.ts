/**
 * Checks at load that the ONNX checker makes too, for what later stages rely on:
 * - initializer names are unique within each graph (sparse initializers included): with
 *   two `W`, the tool would decompose one while ONNX Runtime runs the other;
 * - every tensor's dims are non-negative and its element count (and the sum over all
 *   tensors) is an exact JS number (below 2^53), so parameter counts and payload sizes
 *   are never negative or rounded.
 */
import { LrError } from '../errors.js';
import { SCHEMA, type GraphProto, type MessageName, type ModelProto, type SparseTensorProto, type TensorProto } from './schema.js';

type Obj = Record<string, unknown>;
const isMessage = (k: string): k is MessageName => k in SCHEMA;

/** Calls `fn` on every message of the model (depth first) with its type name. */
function walk(m: MessageName, obj: Obj, fn: (m: MessageName, obj: Obj) => void): void {
  fn(m, obj);
  for (const f of SCHEMA[m]) {
    const v = obj[f.name];
    if (!isMessage(f.kind) || v === undefined || v === null) continue;
    if (f.repeated) for (const x of v as Obj[]) walk(f.kind, x, fn);
    else walk(f.kind, v as Obj, fn);
  }
}

const label = (name: string | undefined): string => (name ? `"${name}"` : '(unnamed)');

/** Checks dims and returns the element count. */
function checkDims(dims: readonly number[], what: string, file: string): number {
  let n = 1;
  for (const d of dims) {
    if (d < 0) throw new LrError('parse', `${file}: ${what} has a negative dimension in [${dims.join(', ')}]`);
    n *= d;
  }
  // A zero dim makes the count 0 whatever the others are; otherwise it must be exact.
  if (!dims.includes(0) && !Number.isSafeInteger(n)) {
    throw new LrError('parse', `${file}: ${what} has dims [${dims.join(', ')}]: ${n.toExponential(2)} elements, past 2^53`);
  }
  return dims.includes(0) ? 0 : n;
}

function checkInitializerNames(g: GraphProto, file: string): void {
  const seen = new Set<string>();
  const add = (name: string | undefined, kind: string): void => {
    if (!name) return;
    if (seen.has(name)) {
      throw new LrError('parse', `${file}: graph ${label(g.name)} has more than one initializer named "${name}" (${kind}): an invalid model (the ONNX checker refuses it)`);
    }
    seen.add(name);
  };
  for (const t of g.initializer) add(t.name, 'initializer');
  for (const s of g.sparseInitializer) add(s.values?.name, 'sparse initializer');
}

/** Throws LrError 'parse' naming the file and the tensor when the model breaks a rule above. */
export function validateModel(model: ModelProto, file: string): void {
  // The parameter count is a sum over tensors: it must stay exact too.
  let total = 0;
  walk('ModelProto', model as unknown as Obj, (m, obj) => {
    if (m === 'GraphProto') checkInitializerNames(obj as unknown as GraphProto, file);
    else if (m === 'TensorProto') {
      const t = obj as unknown as TensorProto;
      total += checkDims(t.dims, `tensor ${label(t.name)}`, file);
      if (!Number.isSafeInteger(total)) throw new LrError('parse', `${file}: its tensors hold more than 2^53 elements in all (at tensor ${label(t.name)})`);
    } else if (m === 'SparseTensorProto') {
      const s = obj as unknown as SparseTensorProto;
      checkDims(s.dims, `sparse tensor ${label(s.values?.name)}`, file);
    }
  });
}
