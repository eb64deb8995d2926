/**
 * The optimize report as one self-contained HTML page (`--html FILE`): everything inline
 * (one stylesheet, SVG charts from svg.ts, no script, no font, no request of any kind), so
 * the file opens the same from a mail attachment as from disk. It shows what the text
 * report says, and what a table cannot: each rewritten layer's singular-value spectra
 * with the rank kept (spectra.ts, from the original weights), the error-vs-rank curve a
 * budget measured, the measured latency of each chain against its original layer, the
 * budget's allocation, and the verification per output with its worst input.
 *
 * Pure: the report and the spectra in, a string out. Every string that comes from the
 * model or the command line (layer, output and file names) goes through `esc`.
 */
import type { Candidate, LayerRecord, LayerSensitivity } from './records.js';
import { bytes, human, ratio } from './format.js';
import { groupSkipReasons } from './kinds.js';
import { narrowReorderLine, outputsText, roomLine, runtimeLabel, TIMING_PHASES, unseenWhy, type Report } from './report.js';
import { energyKept, type LayerSpectra, type Spectrum } from './spectra.js';
import { barChart, esc, fmt, lineChart, type Series } from './svg.js';

export interface HtmlOptions {
  /** Spectra of the rewritten layers (spectra.ts layerSpectra); without them the page says why. */
  spectra?: readonly LayerSpectra[];
  /** Why there are no spectra, when `spectra` is absent (e.g. the model was given as bytes). */
  spectraNote?: string;
}

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1040px;padding:16px 24px;color:#1d2330;background:#fff}
h1{font-size:20px;margin:8px 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px;word-break:break-all}
.sub{color:#5a6478}.pass{color:#17803d;font-weight:600}.fail{color:#b42318;font-weight:600}
table{border-collapse:collapse;margin:6px 0 10px}th,td{padding:3px 10px;border-bottom:1px solid #e6e9ef;text-align:right;vertical-align:top}
th{background:#f4f6f9;font-weight:600}td.l,th.l{text-align:left}td.name{text-align:left;word-break:break-all;max-width:360px}
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}
svg.chart{background:#fff;border:1px solid #e6e9ef;border-radius:4px;max-width:100%;height:auto}
svg .title{font-size:12px;font-weight:600;fill:#1d2330}svg .tick{font-size:10px;fill:#5a6478}svg .axis{font-size:11px;fill:#394152}
svg .grid{stroke:#eef0f4;stroke-width:1}svg .frame{fill:none;stroke:#c9cfd9}
svg .line{fill:none;stroke-width:1.6}svg .dot{stroke:none}svg .chosen{fill:none;stroke:#b42318;stroke-width:2}
svg .mark{stroke:#b42318;stroke-width:1.4;stroke-dasharray:4 3}svg .mark-label{font-size:10px;fill:#b42318}
svg .s0{stroke:#2f6fd0;fill:#2f6fd0}svg .s1{stroke:#e08a1e;fill:#e08a1e}svg .s2{stroke:#3a9a5b;fill:#3a9a5b}
svg .s3{stroke:#8a55c2;fill:#8a55c2}svg .s4{stroke:#c2457a;fill:#c2457a}svg .s5{stroke:#5d6b80;fill:#5d6b80}
svg path.line.s0,svg path.line.s1,svg path.line.s2,svg path.line.s3,svg path.line.s4,svg path.line.s5{fill:none}
details{margin:8px 0}summary{cursor:pointer;color:#394152}.note{color:#5a6478;margin:4px 0}
`;

const sci = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '' : x.toExponential(2));
const cos4 = (x: number): string => (Number.isFinite(x) ? (Math.floor(x * 1e4 + 1e-7) / 1e4).toFixed(4) : '?');

/** A table; cells are escaped here, `cls` per column ('l' left-aligned, 'name' a wrapping name). */
function htmlTable(headers: readonly string[], rows: readonly (readonly string[])[], cls: readonly string[] = []): string {
  const c = (i: number): string => (cls[i] ? ` class="${cls[i]}"` : '');
  return `<table><thead><tr>${headers.map((h, i) => `<th${c(i)}>${esc(h)}</th>`).join('')}</tr></thead><tbody>${
    rows.map((r) => `<tr>${r.map((v, i) => `<td${c(i)}>${esc(v)}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

const sameRanks = (a: readonly number[] | undefined, b: readonly number[]): boolean => a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);

/** The candidate a layer ended with, when the sensitivity measured it. */
function chosenCandidate(rec: LayerRecord, sens: LayerSensitivity | undefined): Candidate | undefined {
  return sens?.candidates.find((c) => sameRanks(rec.ranks, c.ranks) && (rec.pass === undefined || c.pass === rec.pass));
}

function verdict(r: Report): string {
  if (!r.verify) return '<span class="sub">not verified</span>';
  return r.verify.pass ? '<span class="pass">PASS</span>' : '<span class="fail">FAIL</span>';
}

function beforeAfter(r: Report): string {
  const a = r.input;
  const b = r.output;
  const rows: string[][] = [
    ['nodes', String(a.nodeCount), String(b.nodeCount), ratio(b.nodeCount, a.nodeCount)],
    ['params', human(a.params), human(b.params), ratio(b.params, a.params)],
    ['MACs (decomposable layers)', human(a.macs), human(b.macs), ratio(b.macs, a.macs)],
    ['file size', bytes(a.bytes), bytes(b.bytes), ratio(b.bytes, a.bytes)],
  ];
  for (const [label, l] of [['latency p50, ORT-node', r.latency], ['latency p50, ORT-web wasm', r.latencyWeb]] as const) {
    if (l) rows.push([label, `${l.originalMs.p50.toFixed(3)} ms`, `${l.optimizedMs.p50.toFixed(3)} ms`, ratio(l.optimizedMs.p50, l.originalMs.p50)]);
  }
  let out = htmlTable(['', 'before', 'after', 'ratio'], rows, ['l']);
  for (const [label, l] of [['ORT-node', r.latency], ['ORT-web (wasm)', r.latencyWeb]] as const) {
    if (!l) continue;
    out += `<p class="note">latency ${esc(label)}: original p10 ${l.originalMs.p10.toFixed(3)} / p50 ${l.originalMs.p50.toFixed(3)} / p90 ${l.originalMs.p90.toFixed(3)} ms, optimized p10 ${l.optimizedMs.p10.toFixed(3)} / p50 ${l.optimizedMs.p50.toFixed(3)} / p90 ${l.optimizedMs.p90.toFixed(3)} ms: speed-up ${l.speedup.toFixed(2)}x (${l.runs} runs each, ${l.threads} thread(s), ${esc(outputsText(l))})</p>`;
  }
  if (r.room) out += `<p class="note">${esc(roomLine(r.room))}</p>`;
  if (r.narrowReorder) out += `<p class="note">${esc(narrowReorderLine(r.narrowReorder))}</p>`;
  return out;
}

function layerTable(rewritten: readonly LayerRecord[]): string {
  return htmlTable(
    ['layer', 'op', 'weight', 'method', 'ranks', 'params', 'MACs', 'weight err', 'data err'],
    rewritten.map((l) => [
      l.name, l.op, l.weightShape.join('x'), l.method ?? '', (l.ranks ?? []).join(','),
      `${human(l.paramsBefore)} → ${human(l.paramsAfter)}`,
      l.macsBefore === undefined ? '' : `${human(l.macsBefore)} → ${human(l.macsAfter)}`,
      sci(l.relError), sci(l.dataError),
    ]),
    ['name', 'l', 'l', 'l', 'l'],
  );
}

function allocation(r: Report, rewritten: readonly LayerRecord[]): string {
  let out = '';
  const b = r.budget;
  if (b) {
    out += `<p>budget: ${esc(b.kind)} target ${esc(b.target.toPrecision(3))}, achieved ${esc(b.achieved.toPrecision(3))} (${esc(b.unit)}): ${b.met ? '<span class="pass">met</span>' : '<span class="fail">not met</span>'}; ` +
      `output rel. error on calibration inputs: predicted ${esc(b.predictedError.toPrecision(3))}, measured ${esc(b.measuredError.toPrecision(3))}${b.unseenError === undefined ? '' : `, judged at ${esc(b.unseenError.toPrecision(3))} (${esc(unseenWhy(b))})`}${b.attempts > 1 ? `; ${b.attempts} allocations` : ''}</p>`;
    if (!b.met && b.why) out += `<p class="note">why: ${esc(b.why)}</p>`;
    if (b.stages && b.stages.length > 0) {
      out += htmlTable(['stage', 'target', 'kept', 'layers', 'measured error', 'top-1'], b.stages.map((s) => {
        const kept = s.params ?? s.macs ?? s.latency;
        return [String(s.stage), s.target.toPrecision(3), kept === undefined ? '' : kept.toFixed(3), String(s.layers), s.measuredError.toPrecision(3), s.top1 === undefined ? '' : s.top1.toFixed(3)];
      }));
    }
  }
  if (r.calibration) out += `<p class="note">calibration inputs: ${esc(r.calibration)}</p>`;
  if (rewritten.length > 0) {
    const params = barChart({
      title: b ? 'The budget\'s allocation: params per rewritten layer' : 'Params per rewritten layer',
      categories: rewritten.map((l) => l.name),
      groups: [{ label: 'before', values: rewritten.map((l) => l.paramsBefore) }, { label: 'after', values: rewritten.map((l) => l.paramsAfter) }],
      unit: 'parameters',
    });
    const macs = barChart({
      title: 'MACs per rewritten layer',
      categories: rewritten.map((l) => l.name),
      groups: [{ label: 'before', values: rewritten.map((l) => l.macsBefore) }, { label: 'after', values: rewritten.map((l) => l.macsAfter) }],
      unit: 'multiply-accumulates per run',
    });
    out += `<div class="charts">${[params, macs].filter((c) => c !== '').map((c) => `<figure class="allocation">${c}</figure>`).join('')}</div>`;
  }
  return out;
}

/** The measured latency of each chosen chain against its original layer, when the run measured them (--layer-latency). */
function layerLatency(rewritten: readonly LayerRecord[], sens: ReadonlyMap<string, LayerSensitivity>): string {
  const rows = rewritten.flatMap((l) => {
    const s = sens.get(l.name);
    const c = chosenCandidate(l, s);
    return s?.ms !== undefined && c?.ms !== undefined ? [{ name: l.name, before: s.ms, after: c.ms }] : [];
  });
  if (rows.length === 0) return '';
  const chart = barChart({
    title: 'Measured latency: original layer vs its chain (median)',
    categories: rows.map((r) => r.name),
    groups: [{ label: 'original layer', values: rows.map((r) => r.before) }, { label: 'chain', values: rows.map((r) => r.after) }],
    unit: 'ms',
  });
  return `<h2>Per-layer latency</h2><figure class="latency">${chart}</figure>`;
}

function spectrumChart(layer: string, sp: Spectrum): string {
  const first = sp.series[0]?.sigma[0] ?? 0;
  const top = Math.max(...sp.series.map((s) => s.sigma[0] ?? 0));
  const series: Series[] = sp.series.map((s) => ({
    label: s.label,
    // σ_i / σ_1 of the largest: the decay is what the rank choice reads, not the scale.
    points: s.sigma.map((v, i) => [i + 1, top > 0 ? v / top : v] as const),
    draw: s.sigma.length <= 40 ? 'both' : 'line',
  }));
  const kept = sp.rank !== undefined && sp.series.length === 1 ? ` (keeps ${(100 * energyKept(sp.series[0]!.sigma, sp.rank)).toFixed(1)}% of the energy)` : '';
  const markers = sp.rank !== undefined ? [{ x: sp.rank, label: `${sp.rankLabel ?? 'rank'} = ${sp.rank}` }] : [];
  const chart = lineChart({
    title: sp.label, xLabel: 'index i', yLabel: 'σᵢ / σ₁ (log)', logY: true, series, markers,
  });
  if (chart === '' || first === 0) return '';
  return `<figure class="spectrum" data-layer="${esc(layer)}">${chart}<figcaption class="note">${esc(`${sp.rankLabel ?? 'rank'} ${sp.rank ?? '-'} of ${sp.series[0]!.sigma.length}${kept}`)}</figcaption></figure>`;
}

/** Output error with only this layer compressed, against the share of its params kept, per candidate. */
function errorCurve(rec: LayerRecord, s: LayerSensitivity): string {
  if (s.candidates.length === 0) return '';
  const groups = new Map<string, Candidate[]>();
  for (const c of s.candidates) {
    const key = `${c.pass}${c.measured === false ? ' (predicted)' : ''}`;
    groups.set(key, [...groups.get(key) ?? [], c]);
  }
  const x = (c: Candidate): number => c.after.params / Math.max(1, s.before.params);
  const series: Series[] = [...groups].map(([label, cs]) => {
    const sorted = [...cs].sort((a, b) => x(a) - x(b));
    return {
      label, draw: 'both',
      points: sorted.map((c) => [x(c), Math.sqrt(Math.max(0, c.outErr2))] as const),
      tips: sorted.map((c) => `ranks ${c.ranks.join(',')}: params kept ${fmt(x(c))}, output error ${fmt(Math.sqrt(Math.max(0, c.outErr2)))}${c.ms === undefined ? '' : `, ${c.ms.toFixed(3)} ms`}`),
    };
  });
  const chosen = chosenCandidate(rec, s);
  const chart = lineChart({
    title: 'Output error vs params kept (this layer alone)',
    xLabel: 'params kept (fraction of the layer)', yLabel: 'rel. output error (log)', logY: true, series,
    highlights: chosen ? [{ x: x(chosen), y: Math.sqrt(Math.max(0, chosen.outErr2)), label: `chosen: ranks ${chosen.ranks.join(',')}` }] : [],
  });
  return chart === '' ? '' : `<figure class="error-curve" data-layer="${esc(rec.name)}">${chart}</figure>`;
}

function layerSection(rec: LayerRecord, spectra: LayerSpectra | undefined, sens: LayerSensitivity | undefined, spectraNote: string | undefined): string {
  const parts: string[] = [];
  parts.push(`<h3>${esc(rec.name)}</h3>`);
  parts.push(`<p class="sub">${esc(`${rec.op} ${rec.weightShape.join('x')}: ${rec.method ?? ''}${rec.ranks ? ` ranks ${rec.ranks.join(',')}` : ''}, params ${human(rec.paramsBefore)} → ${human(rec.paramsAfter)}, weight rel. error ${sci(rec.relError)}${rec.dataError === undefined ? '' : `, data error ${sci(rec.dataError)}`}`)}</p>`);
  if (rec.note) parts.push(`<p class="note">${esc(rec.note)}</p>`);
  const charts: string[] = [];
  for (const sp of spectra?.spectra ?? []) charts.push(spectrumChart(rec.name, sp));
  if (sens) charts.push(errorCurve(rec, sens));
  parts.push(`<div class="charts">${charts.join('')}</div>`);
  if (spectra?.note) parts.push(`<p class="note">spectra: ${esc(spectra.note)}</p>`);
  else if (!spectra && spectraNote) parts.push(`<p class="note">spectra: ${esc(spectraNote)}</p>`);
  const chosen = chosenCandidate(rec, sens);
  if (sens?.ms !== undefined && chosen?.ms !== undefined) {
    parts.push(`<p class="note">measured: the chain ${chosen.ms.toFixed(3)} ms against the original layer's ${sens.ms.toFixed(3)} ms (${(chosen.ms / sens.ms).toFixed(2)}x)</p>`);
  }
  return `<section class="layer">${parts.join('')}</section>`;
}

function verification(r: Report): string {
  const v = r.verify;
  if (!v) return '<h2>Verification</h2><p class="note">The run did not verify the model (--no-verify).</p>';
  let out = `<h2>Verification: ${verdict(r)}</h2>`;
  out += `<p class="note">${esc(`${runtimeLabel(v.backend)}, ${v.runs} run(s), ${r.inputs ?? 'seeded random inputs'}; min cosine ${v.minCosine ?? '-'}${v.atol !== undefined ? `, atol ${v.atol}, rtol ${v.rtol}` : ''}`)}</p>`;
  out += htmlTable(
    ['output', 'max abs', 'mean abs', 'rel L2', 'cosine', 'top-1', 'result', 'worst input', 'its cosine', 'its rel L2'],
    v.outputs.map((o) => [
      o.name, sci(o.maxAbs), sci(o.meanAbs), sci(o.relL2), cos4(o.cosine), o.top1 === undefined ? '' : o.top1.toFixed(3),
      o.checked === false ? 'not checked' : o.pass ? 'ok' : 'FAIL',
      o.worstFeed ? `#${o.worstFeed.index + 1} of ${o.worstFeed.of ?? v.runs}${o.worstFeed.samples ? ' samples' : ''}` : '', o.worstFeed ? cos4(o.worstFeed.cosine) : '', o.worstFeed ? sci(o.worstFeed.relL2) : '',
    ]),
    ['name', 'r', 'r', 'r', 'r', 'r', 'l'],
  );
  for (const reason of v.reasons) out += `<p class="note">${esc(reason)}</p>`;
  return out;
}

function skippedSection(skipped: readonly LayerRecord[]): string {
  if (skipped.length === 0) return '';
  const summary = groupSkipReasons(skipped.map((l) => l.reason ?? '')).join('; ');
  return `<details><summary>${esc(`${skipped.length} layer(s) left as they were: ${summary}`)}</summary>${
    htmlTable(['layer', 'op', 'weight', 'params', 'reason'], skipped.map((l) => [l.name, l.op, l.weightShape.join('x'), human(l.paramsBefore), l.reason ?? '']), ['name', 'l', 'l', 'r', 'l'])}</details>`;
}

/** The report as a self-contained HTML page. */
export function renderHtml(r: Report, opts: HtmlOptions = {}): string {
  const rewritten = r.layers.filter((l) => !l.skipped);
  const skipped = r.layers.filter((l) => l.skipped);
  const sens = new Map((r.sensitivity ?? []).map((s) => [s.name, s]));
  const spectra = new Map((opts.spectra ?? []).map((s) => [s.layer, s]));
  const title = `onnx-lr: ${r.input.file} → ${r.output.file}`;
  const body: string[] = [];
  body.push(`<h1>${esc(title)}</h1>`);
  body.push(`<p class="sub">${esc(`${r.tool}; ${r.policy}; seed ${r.seed}; ${r.seconds.toFixed(1)} s`)}; verification ${verdict(r)}</p>`);
  body.push('<h2>Before and after</h2>', beforeAfter(r));
  body.push(`<h2>Layers: ${rewritten.length} rewritten, ${skipped.length} left as they were</h2>`);
  if (rewritten.length > 0) body.push(layerTable(rewritten));
  body.push(skippedSection(skipped));
  body.push(`<h2>${r.budget ? 'Budget and allocation' : 'Allocation'}</h2>`, allocation(r, rewritten));
  body.push(layerLatency(rewritten, sens));
  if (rewritten.length > 0) {
    body.push('<h2>Per layer: spectra and chosen ranks</h2>');
    body.push('<p class="note">Singular values of what each rewrite truncates, from the original weights, relative to the largest, with the rank kept marked.' +
      (r.sensitivity ? ' Where the run measured sensitivity, the output error with only that layer compressed, per candidate, with the chosen one circled.' : '') + '</p>');
    for (const rec of rewritten) body.push(layerSection(rec, spectra.get(rec.name), sens.get(rec.name), opts.spectra ? undefined : opts.spectraNote));
  }
  body.push(verification(r));
  if (r.timings) {
    const parts = TIMING_PHASES.flatMap((p) => (r.timings![p] === undefined ? [] : [`${p} ${r.timings![p]!.toFixed(1)}`]));
    if (parts.length > 0) body.push(`<p class="note">${esc(`time (s): ${parts.join(', ')}`)}</p>`);
  }
  for (const n of r.notes) body.push(`<p class="note">${esc(`note: ${n}`)}</p>`);
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<link rel="icon" href="data:,">
<title>${esc(title)}</title><style>${STYLE}</style></head>
<body>
${body.filter((b) => b !== '').join('\n')}
</body></html>
`;
}
