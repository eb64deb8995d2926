/**
 * A part of the calibration data left out of a fit, to see how the fit does on inputs it
 * did not see (budget-run.ts: the anchored fit of the kept allocation, and each
 * allocation's independent fit once more, part-fit.ts). With several
 * feeds the last feed is left out; with one feed holding a batch of samples (a model with
 * a free batch axis gets up to 8 per run) the last quarter of its samples. Without that
 * split, eight samples in one feed had no check at all: PP-OCRv4 rec's anchored fit came
 * out 1.2–1.8× worse on new samples than on its own, the independent fit 1.2–1.3×, and one
 * run in six failed its held-out verification while its budget was met with room.
 */
import type { Feeds, HostData, HostTensor } from '../verify/tensor.js';
import { samplesIn, sampleSlices } from '../verify/tensor.js';
import { outputErr2 } from './output-error.js';

type Outputs = readonly Record<string, HostTensor>[];

export interface LeftOut {
  /** The feeds a fit sees. */
  fitFeeds: Feeds[];
  /** The outputs (of every calibration feed, in order) on the part fitted. */
  fitted(outs: Outputs): Record<string, HostTensor>[];
  /** The outputs on the part left out. */
  leftOut(outs: Outputs): Record<string, HostTensor>[];
  /** The feeds (by index) whose outputs `leftOut` reads: the others may be left unrun. */
  leftOutFeeds: number[];
  /** The outputs on the part fitted as the fit feeds give them: one record per fit feed, batched. */
  fitBatches(outs: Outputs): Record<string, HostTensor>[];
  /** What was fitted on, for notes: "2 of 3 calibration feeds", "6 of 8 calibration samples". */
  label: string;
  /** What the parts are made of: "calibration feeds" or "calibration samples". */
  unit: string;
}

/** The first `n` samples along axis 0 of an input of `batch` samples (a view of its data). */
function headOf(t: HostTensor, batch: number, n: number): HostTensor {
  return { type: t.type, dims: [n, ...t.dims.slice(1)], data: t.data.subarray(0, (t.data.length / batch) * n) as HostData };
}

/**
 * The split of `feeds` (with their original outputs `reference`; `learned`: shapes at
 * batch 1) into a part to fit and a part left out; undefined when there is nothing to
 * leave out (one sample, or one feed whose inputs or outputs do not split by sample).
 */
export function leftOutSplit(feeds: readonly Feeds[], reference: Outputs, learned: ReadonlyMap<string, readonly number[]> | undefined): LeftOut | undefined {
  const n = feeds.length;
  if (n >= 2) {
    return {
      fitFeeds: feeds.slice(0, n - 1), fitted: (outs) => outs.slice(0, n - 1), leftOut: (outs) => outs.slice(n - 1, n), leftOutFeeds: [n - 1], fitBatches: (outs) => outs.slice(0, n - 1),
      label: `${n - 1} of ${n} calibration feeds`, unit: 'calibration feeds',
    };
  }
  const feed = feeds[0];
  const ref = reference[0];
  if (!feed || !ref) return undefined;
  const inputs = Object.values(feed);
  const batch = inputs[0]?.dims[0];
  if (batch === undefined || batch < 2 || !inputs.every((t) => t.dims[0] === batch)) return undefined;
  const names = Object.keys(ref);
  if (names.length === 0 || !names.every((name) => samplesIn(ref[name]!, learned?.get(name)) === batch)) return undefined;
  const kept = batch - Math.max(1, Math.floor(batch / 4));
  const head: Feeds = Object.fromEntries(Object.entries(feed).map(([name, t]) => [name, headOf(t, batch, kept)]));
  /** Samples [from, to) of the first feed's outputs, one record each. */
  const samples = (outs: Outputs, from: number, to: number): Record<string, HostTensor>[] => {
    const o = outs[0];
    if (!o) return [];
    const sliced = names.map((name) => [name, sampleSlices(o[name]!, batch)] as const);
    return Array.from({ length: to - from }, (_, i) => Object.fromEntries(sliced.map(([name, s]) => [name, s[from + i]!])));
  };
  return {
    fitFeeds: [head], fitted: (outs) => samples(outs, 0, kept), leftOut: (outs) => samples(outs, kept, batch), leftOutFeeds: [0],
    // Every output's samples are along its first axis (samplesIn above).
    fitBatches: (outs) => (outs[0] ? [Object.fromEntries(names.map((name) => [name, headOf(outs[0]![name]!, batch, kept)]))] : []),
    label: `${kept} of ${batch} calibration samples`, unit: 'calibration samples',
  };
}

/**
 * How much more a fit leans toward the data it saw than the independent fit does, as a
 * factor on squared errors: (its error ÷ the independent fit's) on the part left out over
 * the same ratio on the part fitted (the independent fit on all the data saw both parts
 * and leans toward them alike, so this is the fit's whole lean; at least 1). A fit that
 * does relatively better on the data it saw than on
 * new data will do so on other new inputs too: its margin for unseen inputs is widened by
 * this factor. 1 when any error is missing or zero.
 */
export function leanFactor(fit: { fitted: number; leftOut: number }, independent: { fitted: number; leftOut: number }): number {
  const r = (fit.leftOut / independent.leftOut) / (fit.fitted / independent.fitted);
  return Number.isFinite(r) && r > 1 ? r : 1;
}

/** The squared output errors (output-error.ts outputErr2) of `outs` against `reference` on the part fitted and on the part left out; NaN without outputs. */
export function errorsOn(split: LeftOut, reference: Outputs, outs: Outputs | undefined): { fitted: number; leftOut: number } {
  if (!outs) return { fitted: NaN, leftOut: NaN };
  return { fitted: outputErr2(split.fitted(reference), split.fitted(outs)), leftOut: outputErr2(split.leftOut(reference), split.leftOut(outs)) };
}
