/** Calibration samples grouped into feeds (one per model run), with the data of the inputs that are not calibrated. */
import { err, ok, type Result } from '../errors.js';
import { buildFeeds, type FeedPlan, type ShapeOverrides, type ValueOverrides } from '../verify/inputs.js';
import type { ValueInfo } from '../verify/session.js';
import type { Feeds } from '../verify/tensor.js';
import { DEFAULT_CALIB_BATCH, type CalibOptions, type CalibSet, type CalibSource } from './calib-set.js';
import { concat0, isFixed, type Collected, type Sample } from './samples.js';

interface Assembly {
  source: CalibSource;
  inputs: readonly ValueInfo[];
  calibrated: readonly string[];
  collected: Collected;
  opts: CalibOptions;
}

/** Groups samples into feeds and plans the data of the other inputs. */
export function assemble(a: Assembly): Result<CalibSet> {
  const { inputs, calibrated, collected, opts } = a;
  const byName = new Map(inputs.map((i) => [i.name, i]));
  const values = opts.values ?? {};
  const notes: string[] = [];
  let samples = collected.samples;
  if (samples.length === 0) return err('usage', `${describeSourcePath(a.source)}: no samples`);

  // Samples per feed (see the file comment).
  const fixedB = new Set<number>();
  let allFree = true;
  for (const name of calibrated) {
    const d0 = byName.get(name)!.shape[0];
    const mode = collected.modes.get(name)!;
    if (mode === 'batch' && isFixed(d0) && d0 > 1) fixedB.add(d0);
    const shared = typeof d0 === 'string' && d0 !== '' && inputs.some((i) => i.name in values && !calibrated.includes(i.name) && i.shape.includes(d0));
    if (isFixed(d0) || byName.get(name)!.shape.length === 0 || shared) allFree = false;
  }
  let perFeed = 1;
  let exact = false;
  if (fixedB.size > 0) {
    const [b] = [...fixedB];
    const same = fixedB.size === 1 && calibrated.every((n) => collected.modes.get(n) === 'batch' && byName.get(n)!.shape[0] === b);
    if (!same) return err('usage', `${describeSourcePath(a.source)}: inputs ${calibrated.join(', ')} take fixed batches of different sizes; give whole inputs (arrays of rank + 1) instead`);
    perFeed = b!;
    exact = true;
    const keep = samples.length - (samples.length % perFeed);
    if (keep === 0) return err('usage', `${describeSourcePath(a.source)}: ${samples.length} sample${samples.length === 1 ? '' : 's'}, but the input's batch dim is fixed at ${perFeed}`);
    if (keep < samples.length) notes.push(`${samples.length - keep} calibration sample(s) dropped: the batch dim is fixed at ${perFeed}`);
    samples = samples.slice(0, keep);
  } else if (allFree) {
    perFeed = opts.batch ?? DEFAULT_CALIB_BATCH;
  }

  // Consecutive samples whose dims agree (all axes but 0) share a feed.
  const groups: Sample[][] = [];
  const restKey = (s: Sample): string => calibrated.map((n) => s.tensors[n]!.dims.slice(1).join('x')).join('|');
  for (const s of samples) {
    const g = groups[groups.length - 1];
    if (g && g.length < perFeed && restKey(g[0]!) === restKey(s)) g.push(s);
    else {
      if (exact && g && g.length < perFeed) return err('usage', `${describeSourcePath(a.source)}: samples of one fixed-size batch have different dims`);
      groups.push([s]);
    }
  }
  const feedCalib = (g: Sample[]): Feeds => Object.fromEntries(calibrated.map((n) => [n, concat0(g.map((s) => s.tensors[n]!))]));

  // The other inputs: fixed values or seeded random data, one plan per distinct dims.
  const others = inputs.filter((i) => !calibrated.includes(i.name));
  const fixed = others.filter((i) => i.name in values).map((i) => i.name);
  const random = others.filter((i) => !(i.name in values)).map((i) => i.name);
  const shapes: ShapeOverrides = Object.fromEntries(Object.entries(opts.shapes ?? {}).filter(([n]) => !calibrated.includes(n)));
  const otherValues: ValueOverrides = Object.fromEntries(Object.entries(values).filter(([n]) => !calibrated.includes(n)));
  const signature = (g: Sample[]): string => calibrated.map((n) => `${n}:${g.reduce((s, x) => s + x.tensors[n]!.dims[0]!, 0)}x${g[0]!.tensors[n]!.dims.slice(1).join('x')}`).join('|');
  const plans = new Map<string, FeedPlan>();
  const slot: { key: string; k: number }[] = [];
  if (others.length > 0) {
    const counts = new Map<string, { count: number; first: Sample[] }>();
    for (const g of groups) {
      const key = signature(g);
      const c = counts.get(key);
      slot.push({ key, k: c ? c.count : 0 });
      if (c) c.count++; else counts.set(key, { count: 1, first: g });
    }
    for (const [key, { count, first }] of counts) {
      const plan = buildFeeds(inputs, { seed: opts.seed ?? 0, count, shapes, values: { ...otherValues, ...feedCalib(first) } });
      if (!plan.ok) return err(plan.error.kind, `${describeSourcePath(a.source)}: ${plan.error.message}`);
      for (const d of plan.value.defaulted) {
        if (!calibrated.includes(d.input)) notes.push(`dynamic dim ${d.input}[${d.axis}]${d.symbol ? ` (${d.symbol})` : ''} set to 1 for calibration`);
      }
      plans.set(key, plan.value);
    }
  } else {
    // Still check the calibrated dims against the declarations and each other (symbols).
    for (const g of groups.slice(0, 1)) {
      const plan = buildFeeds(inputs, { values: feedCalib(g) });
      if (!plan.ok) return err(plan.error.kind, `${describeSourcePath(a.source)}: ${plan.error.message}`);
    }
  }
  const otherNames = others.map((i) => i.name);
  return ok({
    source: a.source,
    samples: samples.length,
    batches: groups.length,
    batchSize: Math.max(...groups.map((g) => g.length)),
    calibrated: [...calibrated],
    fixed,
    random,
    notes: [...new Set(notes)],
    *feeds() {
      for (let i = 0; i < groups.length; i++) {
        const feed: Feeds = {};
        if (otherNames.length > 0) {
          const { key, k } = slot[i]!;
          const f = plans.get(key)!.feeds[k]!;
          for (const n of otherNames) feed[n] = f[n]!;
        }
        Object.assign(feed, feedCalib(groups[i]!));
        // Keep the model's input order.
        yield Object.fromEntries(inputs.map((inp) => [inp.name, feed[inp.name]!]));
      }
    },
  });
}

function describeSourcePath(s: CalibSource): string {
  return s.kind === 'random' ? 'random calibration' : s.path;
}
