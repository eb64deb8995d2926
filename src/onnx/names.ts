/**
 * Fresh names for values and nodes added to a model: every place that adds some (the
 * graph view, the timing copy, the shape probe, the float32 conversion) takes them from
 * the names the model already uses, subgraphs included (ONNX forbids a subgraph name
 * that shadows an outer one, and a checker would reject the model).
 */
import type { GraphProto } from './schema.js';

/**
 * Every name `g` uses (its nodes' names, inputs and outputs, its initializers, inputs,
 * outputs and value_info) added to `into`; with `deep` (the default) its subgraphs' too,
 * at any depth.
 */
export function namesOf(g: GraphProto, into = new Set<string>(), deep = true): Set<string> {
  for (const n of g.node) {
    if (n.name) into.add(n.name);
    for (const v of n.input) if (v) into.add(v);
    for (const v of n.output) if (v) into.add(v);
    if (deep) for (const a of n.attribute) for (const sub of [...(a.g ? [a.g] : []), ...a.graphs]) namesOf(sub, into, true);
  }
  for (const t of g.initializer) if (t.name) into.add(t.name);
  for (const v of [...g.input, ...g.output, ...g.valueInfo]) if (v.name) into.add(v.name);
  return into;
}

/** `base` when `taken` lacks it, else the first of `base_1`, `base_2`, … it lacks; added to `taken`. */
export function freshName(taken: Set<string>, base: string): string {
  let name = base;
  for (let i = 1; taken.has(name); i++) name = `${base}_${i}`;
  taken.add(name);
  return name;
}
