/**
 * Per-layer decisions: what `onnx-lr plan` writes and `optimize --plan` applies exactly.
 * A plan names layers by node name (or first output when unnamed) and fixes pass and ranks;
 * it carries the fingerprint of the model it was made for, checked when it is applied.
 */
import { LrError } from '../errors.js';
import type { Model } from '../graph/graph.js';
import { findLayers, findQuantizedLayers } from '../graph/layers.js';
import { modelFingerprint } from '../graph/summary.js';
import type { LayerRecord, LayerSensitivity } from '../report/records.js';

export type { LayerRecord };


export interface PlanFile {
  /** The JSON's shape version (schema/plan.schema.json); `onnx-lr plan` writes it, older plans lack it. */
  schemaVersion?: number;
  version: 1;
  model: string;
  /** The model's structure hash (graph/summary.ts modelFingerprint); absent in plans of older versions. */
  fingerprint?: string;
  policy: string;
  layers: LayerRecord[];
  /** Per-layer sensitivity measurements, cached so a budgeted run can reuse them. */
  sensitivity?: LayerSensitivity[];
  /** Where the plan was read from (set by parsePlan, not written). */
  file?: string;
}

/** Missing layers named one by one in the notes; past this, one note counts the rest. */
const MAX_MISSING_NOTES = 20;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isRanks = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((r) => Number.isSafeInteger(r) && r > 0);
const isCost = (v: unknown): boolean => isObject(v) && Number.isFinite(v.params) && Number.isFinite(v.macsPerPosition);
/** Errors that were Infinity are written as null by JSON.stringify: read them back as Infinity. */
const isError = (v: unknown): boolean => v === null || typeof v === 'number';

/**
 * Checks the cached measurements field by field (the allocation does arithmetic on all of
 * them) and turns the nulls JSON made of infinite errors back into Infinity.
 */
function checkSensitivity(v: unknown, file: string): LayerSensitivity[] {
  const bad = (where: string, what: string): never => {
    throw new LrError('parse', `plan ${file}: "sensitivity"${where} ${what}`);
  };
  if (!Array.isArray(v)) return bad('', 'must be an array (of per-layer measurements)');
  const seen = new Set<string>();
  v.forEach((s: unknown, i) => {
    const at = `[${i}]`;
    if (!isObject(s)) return bad(at, 'is not an object');
    if (typeof s.name !== 'string') return bad(at, 'has no "name"');
    if (seen.has(s.name)) return bad(at, `names layer ${s.name} a second time`);
    seen.add(s.name);
    if (typeof s.op !== 'string') return bad(at, `(${s.name}) has no "op"`);
    if (!isCost(s.before)) return bad(at, `(${s.name}) needs "before" as {"params", "macsPerPosition"} numbers`);
    for (const k of ['macs', 'ms'] as const) if (s[k] !== undefined && !Number.isFinite(s[k])) bad(at, `(${s.name}) has a "${k}" that is not a number`);
    if (s.align !== undefined && !(Number.isSafeInteger(s.align) && (s.align as number) > 0)) bad(at, `(${s.name}) has an "align" that is not a positive integer`);
    if (s.reason !== undefined && typeof s.reason !== 'string') bad(at, `(${s.name}) has a "reason" that is not a string`);
    if (!Array.isArray(s.candidates)) return bad(at, `(${s.name}) needs a "candidates" array`);
    s.candidates.forEach((c: unknown, j) => {
      const cat = `${at}.candidates[${j}] (${s.name})`;
      if (!isObject(c)) return bad(cat, 'is not an object');
      if (typeof c.pass !== 'string') bad(cat, 'has no "pass"');
      if (!isRanks(c.ranks)) bad(cat, 'needs "ranks" as positive integers');
      if (!isCost(c.after)) bad(cat, 'needs "after" as {"params", "macsPerPosition"} numbers');
      if (!isError(c.relError) || !isError(c.outErr2)) bad(cat, 'needs "relError" and "outErr2" as numbers');
      if (c.ms !== undefined && !Number.isFinite(c.ms)) bad(cat, 'has an "ms" that is not a number');
      for (const k of ['layerError', 'predictedErr2'] as const) if (c[k] !== undefined && !isError(c[k])) bad(cat, `has a "${k}" that is not a number`);
      if (c.measured !== undefined && typeof c.measured !== 'boolean') bad(cat, 'has a "measured" that is not true or false');
      if (c.relError === null) c.relError = Infinity;
      if (c.outErr2 === null) c.outErr2 = Infinity;
    });
  });
  return v as LayerSensitivity[];
}

/**
 * Reads a plan (from `onnx-lr plan`, or a budgeted `optimize --report`, whose input side
 * carries the fingerprint). Everything the driver and the allocation use is checked
 * here; the ranks against each layer's range when the plan is applied (driver.ts).
 */
export function parsePlan(text: string, file: string): PlanFile {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new LrError('parse', `plan ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(j) || !Array.isArray(j.layers)) {
    throw new LrError('parse', `plan ${file}: expected an object with a "layers" array`);
  }
  const seen = new Set<string>();
  (j.layers as unknown[]).forEach((l, i) => {
    if (!isObject(l) || typeof l.name !== 'string') throw new LrError('parse', `plan ${file}: layers[${i}] has no "name"`);
    if (seen.has(l.name)) throw new LrError('parse', `plan ${file}: layer ${l.name} appears twice`);
    seen.add(l.name);
    if (l.reason !== undefined && typeof l.reason !== 'string') throw new LrError('parse', `plan ${file}: layer ${l.name} has a "reason" that is not a string`);
    if (!l.skipped) {
      if (typeof l.pass !== 'string') throw new LrError('parse', `plan ${file}: layer ${l.name} has no "pass" (or set "skipped": true)`);
      if (!isRanks(l.ranks)) {
        throw new LrError('parse', `plan ${file}: layer ${l.name} needs "ranks" as positive integers`);
      }
    }
  });
  const fp = j.fingerprint ?? (isObject(j.input) ? j.input.fingerprint : undefined);
  if (fp !== undefined && typeof fp !== 'string') throw new LrError('parse', `plan ${file}: "fingerprint" is not a string`);
  const plan = { ...j, file } as unknown as PlanFile;
  if (fp !== undefined) plan.fingerprint = fp;
  if (j.sensitivity !== undefined) plan.sensitivity = checkSensitivity(j.sensitivity, file);
  return plan;
}

/**
 * Checks a plan against the model it is about to be applied to: a plan made for another
 * model (its fingerprint differs) is refused unless `force`; a plan without a fingerprint
 * (older versions) and layers the model lacks get a note each. Returns the notes.
 */
export function checkPlanModel(plan: PlanFile, model: Model, opts: { force?: boolean } = {}): string[] {
  const notes: string[] = [];
  const where = plan.file !== undefined ? `plan ${plan.file}` : 'the plan';
  const fp = modelFingerprint(model.proto);
  if (plan.fingerprint === undefined) {
    if (plan.file !== undefined) notes.push(`${where} carries no model fingerprint (made by an older onnx-lr): not checked against this model`);
  } else if (plan.fingerprint !== fp) {
    const what = `${where} was made for another model (its fingerprint ${plan.fingerprint}, this model's ${fp})`;
    if (!opts.force) throw new LrError('usage', `${what}: make a plan for this model, or use --force to apply it anyway`);
    notes.push(`warning: ${what}; applied because of --force`);
  }
  const present = new Set([...findLayers(model).map((l) => l.name), ...findQuantizedLayers(model).map((q) => q.name)]);
  const named = [...new Set([...plan.layers.map((l) => l.name), ...(plan.sensitivity ?? []).map((s) => s.name)])];
  const missing = named.filter((n) => !present.has(n));
  for (const n of missing.slice(0, MAX_MISSING_NOTES)) notes.push(`warning: ${where} names layer ${n}, which the model does not have: ignored`);
  if (missing.length > MAX_MISSING_NOTES) notes.push(`warning: ${where} names ${missing.length - MAX_MISSING_NOTES} more layers the model does not have`);
  return notes;
}
