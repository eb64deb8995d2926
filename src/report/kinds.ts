/**
 * Machine-readable enums beside the report's prose: the policy, the budget's unit, the
 * calibration source and each skip reason as a fixed word a program can switch on. The
 * prose stays what people (and the table printer) read; these are derived from it here,
 * in one place, and the schema (schema/report.schema.json) lists every value.
 */

/** The version of the JSON the CLI and library write: reports, `inspect --json`, plans. */
export const SCHEMA_VERSION = 1;

export type PolicyKind = 'energy' | 'rank-ratio' | 'rank' | 'vbmf' | 'plan'
  | 'target-params' | 'target-macs' | 'target-latency' | 'max-error' | 'max-error-cosine' | 'max-error-top1' | 'other';

/** From the label pipeline.ts writes (driver.ts policyLabel, budgeted.ts budgetLabel). */
export function policyKindOf(label: string): PolicyKind {
  if (label === 'plan' || label === 'latency screen') return 'plan';
  const target = /^target (params|macs|latency)\b/.exec(label);
  if (target) return `target-${target[1]}` as PolicyKind;
  if (label.startsWith('min top-1 agreement')) return 'max-error-top1';
  if (label.startsWith('min output cosine')) return 'max-error-cosine';
  if (label.startsWith('max output error')) return 'max-error';
  // "<method>, energy 0.999[, align 8]"
  const rank = /, (energy|rank-ratio|rank|vbmf)\b/.exec(label);
  return rank ? rank[1] as PolicyKind : 'other';
}

export type UnitKind = 'params' | 'macs' | 'latency';

/** What a budget saves (or, for a latency target, measures), from its `unit` sentence (budget-run.ts). */
export function unitKindOf(unit: string): UnitKind {
  const saving = /saving (params|macs|latency)/.exec(unit);
  if (saving) return saving[1] as UnitKind;
  if (unit === 'params' || unit === 'macs') return unit;
  return /latency/.test(unit) ? 'latency' : /mac/i.test(unit) ? 'macs' : 'params';
}

export type CalibrationKind = 'random' | 'images' | 'arrays' | 'npz' | 'npy';

/** The calibration source, from calib/load.ts describeCalibration's sentence (or pipeline.ts's for seeded random sets). */
export function calibrationKindOf(text: string): CalibrationKind {
  if (/^(held out: )?random inputs|^\d+ seeded random input sets?\b/.test(text)) return 'random';
  if (/ from images in /.test(text)) return 'images';
  if (/ from \d+ files? in /.test(text)) return 'arrays';
  return /\.npz\b/i.test(text) ? 'npz' : 'npy';
}

/** The number of calibration samples, when the sentence gives it. */
export function calibrationSamplesOf(text: string): number | undefined {
  const m = /(\d+) samples?\b/.exec(text) ?? /^(\d+) seeded random input sets?\b/.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * Why a layer was left alone, as a code; `summary` is what the text report prints for a
 * group of layers with different reasons under one code (no placeholder letters: a
 * number common to the group is given, the rest is in each layer's reason).
 */
interface SkipKind { code: string; test: RegExp; summary: (reasons: readonly string[]) => string }

const common = (reasons: readonly string[], re: RegExp): string | undefined => {
  const found = new Set(reasons.map((r) => re.exec(r)?.[1]));
  return found.size === 1 ? [...found][0] : undefined;
};

const SKIP_KINDS: readonly SkipKind[] = [
  { code: 'excluded', test: /excluded by --exclude/, summary: () => 'excluded by --exclude' },
  {
    code: 'min-params', test: /params < --min-params/,
    summary: (rs) => { const n = common(rs, /--min-params (\d+)/); return `fewer params than --min-params${n === undefined ? '' : ` ${n}`}`; },
  },
  { code: 'not-heaviest', test: /^not among the \d+ layers/, summary: () => 'outside the heaviest layers the run considers (--heaviest)' },
  { code: 'quantized', test: /^quantized (layer|weight)/, summary: () => 'quantized layers: not decomposed' },
  { code: 'non-finite', test: /NaN|non-finite|infinite/i, summary: () => 'NaN or infinite values in the weight' },
  { code: 'depthwise', test: /depthwise/, summary: () => 'depthwise convs: nothing to gain (one input channel per group)' },
  // Before the rank rules: a declined CP is about its fit's stability, not about its rank.
  { code: 'degenerate-cp', test: /degenerate CP/, summary: () => 'CP fits whose rank-one terms cancel (degenerate): declined, never shipped' },
  {
    code: 'break-even', test: /break-even/,
    summary: (rs) => { const e = common(rs, /energy ([\d.]+)/); return `no rank below break-even${e === undefined ? '' : ` keeps energy ${e}`}`; },
  },
  { code: 'rank-zero', test: /rank 0\b/, summary: () => 'no low-rank structure worth keeping (rank 0)' },
  { code: 'not-faster', test: /slower in ORT|not measurably faster|ran faster than the original/, summary: () => 'not measured faster in ORT than the original layer' },
  { code: 'budget', test: /budget allocation|no candidate rank/, summary: () => 'left as it was by the budget allocation' },
  {
    code: 'unsupported', test: /does not apply|applies to|not supported|do(es)? not fit|not divisible|is not a |not floating point|expected ≥|invalid dim|does not match/,
    summary: () => 'a form no rewrite handles',
  },
];

/** The code of a skip reason ('other' when none fits). */
export function skipCodeOf(reason: string): string {
  return SKIP_KINDS.find((k) => k.test.test(reason))?.code ?? 'other';
}

/**
 * The skipped layers grouped for one summary line: `43x fewer params than --min-params
 * 4096`. A group whose reasons are all the same prints that reason; reasons of no known
 * code are listed as they are.
 */
export function groupSkipReasons(reasons: readonly string[]): string[] {
  const groups = new Map<string, string[]>();
  for (const r of reasons) {
    const code = skipCodeOf(r);
    const key = code === 'other' ? `other:${r}` : code;
    groups.set(key, [...groups.get(key) ?? [], r]);
  }
  return [...groups].map(([key, rs]) => {
    const kind = SKIP_KINDS.find((k) => k.code === key);
    const text = new Set(rs).size === 1 || !kind ? rs[0] : kind.summary(rs);
    return `${rs.length}x ${text || 'no reason given'}`;
  });
}
