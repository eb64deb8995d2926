/**
 * Multi-stage compression (MUSCO, Gusak et al. 2019, without the fine-tuning): a budget is
 * reached in K steps. After each stage the factored layers are merged back into single
 * nodes (src/rewrite/merge.ts, with each pass's `compose`), statistics and sensitivities are measured again on that
 * model, and the next allocation may only lower ranks further, starting from where the
 * previous stage left each layer. The model never gains layers: a layer split twice is
 * still one chain.
 */
import type { Model } from '../graph/graph.js';
import { findLayers } from '../graph/layers.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { chainWeight, findChain, mergeFactored, type FactoredLayer } from '../rewrite/merge.js';
import { diffNorm, fromArray, frobeniusNorm } from '../linalg/matrix.js';
import { isSkip } from '../rewrite/pass.js';
import { readTensorFloat } from '../onnx/tensor.js';
import type { Budget } from './budget.js';
import { cleanUp } from './driver.js';
import type { LayerRecord } from './plan.js';
import { passByName } from '../../passes/dispatch.js';
import type { Candidate, LayerSensitivity } from './sensitivity.js';

export type LayerSnapshot = Omit<FactoredLayer, 'nodes'>;

/** Each decomposable layer as it is now (before any rewrite), by name. */
export function snapshotLayers(model: Model): Map<string, LayerSnapshot> {
  const out = new Map<string, LayerSnapshot>();
  for (const l of findLayers(model)) {
    out.set(l.name, { name: l.name, original: { ...l.node, input: [...l.node.input], output: [...l.node.output] }, weightInput: l.weightInput, weightDims: [...l.weightShape] });
  }
  return out;
}

/** Merges every chain the records name back into its layer; returns what could not be merged. */
export function mergeStage(model: Model, records: readonly LayerRecord[], snapshot: ReadonlyMap<string, LayerSnapshot>, external: ExternalBytes | undefined): string[] {
  const problems: string[] = [];
  const merged = new Map<string, string>();
  const chainNames = new Set<string>();
  for (const r of records) {
    if (r.skipped || !r.nodes) continue;
    const s = snapshot.get(r.name);
    if (!s) { problems.push(`${r.name}: not a layer of the original model`); continue; }
    const pass = r.pass === undefined ? undefined : passByName(r.pass);
    if (!pass) { problems.push(`${r.name}: unknown pass ${r.pass}`); continue; }
    for (const n of findChain(model, r.nodes)?.chain ?? []) [n.name ?? '', ...n.input, ...n.output].forEach((x) => chainNames.add(x));
    const res = mergeFactored(model, { ...s, nodes: r.nodes }, pass, external, merged);
    if (res) problems.push(`${r.name}: ${res.skip}`);
  }
  cleanUp(model);
  // Names of the chains that are gone are free again, so the next split reuses them.
  const present = new Set<string>();
  for (const g of model.allGraphs()) g.collectNames(present);
  model.forgetNames([...chainNames].filter((x) => !present.has(x)));
  return problems;
}

/** The budget of stage k of K: fractions move linearly from 1 to the target, error budgets grow linearly. */
export function stageBudget(b: Budget, k: number, K: number): Budget {
  if (b.kind === 'error') return { ...b, err2: (b.err2 * k) / K };
  return { kind: b.kind, fraction: 1 - ((1 - b.fraction) * k) / K };
}

/**
 * Where each layer stands at the start of a stage: the previous stage's choice, at zero
 * added error (errors are measured against the stage's starting model). A layer the new
 * measurements lost (no candidates) keeps its choice as its only candidate.
 */
export function carryOver(sens: LayerSensitivity[], previous: readonly LayerSensitivity[], choices: ReadonlyMap<string, Candidate>): Map<string, Candidate> {
  const initial = new Map<string, Candidate>();
  for (const [name, c] of choices) {
    const cur: Candidate = { ...c, outErr2: 0 };
    let layer = sens.find((s) => s.name === name);
    if (!layer) {
      const prev = previous.find((s) => s.name === name);
      if (!prev) continue;
      layer = { ...prev, candidates: [] };
      delete layer.reason;
      sens.push(layer);
    }
    const same = layer.candidates.findIndex((x) => x.pass === cur.pass && x.ranks.join() === cur.ranks.join());
    if (same >= 0) layer.candidates[same] = cur; else layer.candidates.push(cur);
    initial.set(name, cur);
  }
  return initial;
}

/**
 * After the last stage: each rewritten layer's weight error against the ORIGINAL weight
 * (the passes measure it against the merged weight they split). `original` is the input
 * model, read again; its weights are read one layer at a time.
 */
export function errorsAgainstOriginal(model: Model, records: LayerRecord[], snapshot: ReadonlyMap<string, LayerSnapshot>, original: Model,
  external: ExternalBytes | undefined, originalExternal: ExternalBytes | undefined): void {
  const layers = new Map(findLayers(original).map((l) => [l.name, l]));
  for (const r of records) {
    const s = snapshot.get(r.name);
    const l = layers.get(r.name);
    const pass = r.pass === undefined ? undefined : passByName(r.pass);
    if (r.skipped || !r.nodes || !s || !l || !pass) continue;
    const w = chainWeight(model, { ...s, nodes: r.nodes }, pass, external);
    if (isSkip(w)) continue;
    const w0 = readTensorFloat(l.weight.tensor, originalExternal);
    const [a, b] = [fromArray(1, w0.length, w0), fromArray(1, w.length, w)];
    const n0 = frobeniusNorm(a);
    r.relError = diffNorm(a, b) / (n0 === 0 ? 1 : n0);
  }
}
