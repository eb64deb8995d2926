/**
 * Walking every TensorProto of a model (graph initializers at any depth, node attributes,
 * sparse tensors, functions, training info), driven by the schema's field table.
 */
import { SCHEMA, type MessageName, type ModelProto, type TensorProto } from './schema.js';
import { isExternal } from './tensor.js';

/** Where a tensor sits: a graph initializer (may be stored externally) or anywhere else. */
export type TensorSite = 'initializer' | 'other';

type Obj = Record<string, unknown>;
const isMessage = (k: string): k is MessageName => k in SCHEMA;

function mapMessage(m: MessageName, obj: Obj, fn: (t: TensorProto, site: TensorSite) => TensorProto): Obj {
  let out: Obj | undefined;
  for (const f of SCHEMA[m]) {
    const kind = f.kind;
    const v = obj[f.name];
    if (!isMessage(kind) || v === undefined || v === null) continue;
    const site: TensorSite = m === 'GraphProto' && f.name === 'initializer' ? 'initializer' : 'other';
    const one = (x: Obj): Obj => (kind === 'TensorProto' ? (fn(x as unknown as TensorProto, site) as unknown as Obj) : mapMessage(kind, x, fn));
    let next: unknown;
    if (f.repeated) {
      const arr = v as Obj[];
      let copy: Obj[] | undefined;
      arr.forEach((x, i) => {
        const y = one(x);
        if (y !== x) (copy ??= arr.slice())[i] = y;
      });
      next = copy ?? arr;
    } else {
      next = one(v as Obj);
    }
    if (next !== v) (out ??= { ...obj })[f.name] = next;
  }
  return out ?? obj;
}

/**
 * Returns the model with every TensorProto (graph initializers at any depth, node
 * attributes, sparse tensors, functions, training info) replaced by fn's result. Copies
 * only the path to changed tensors; the input model is not modified.
 */
export function mapTensors(model: ModelProto, fn: (t: TensorProto, site: TensorSite) => TensorProto): ModelProto {
  return mapMessage('ModelProto', model as unknown as Obj, fn) as unknown as ModelProto;
}

export function forEachTensor(model: ModelProto, fn: (t: TensorProto, site: TensorSite) => void): void {
  mapTensors(model, (t, site) => { fn(t, site); return t; });
}

/** Whether any tensor of the model keeps its payload in external data. */
export function hasExternalData(model: ModelProto): boolean {
  let ext = false;
  forEachTensor(model, (t) => { if (isExternal(t)) ext = true; });
  return ext;
}
