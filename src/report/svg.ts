/**
 * The HTML report's charts, written as SVG text. No chart library: the report draws three
 * kinds of chart (a line/point chart on a linear or log axis, with vertical markers, and
 * horizontal bars), which take a few hundred lines here, while a library would add a
 * dependency and tens to hundreds of kB inlined into every report (the file must carry
 * everything: no network, no CDN). Written directly, the page is small, renders the same
 * in any browser, and every string in it passes through `esc`.
 *
 * Styling is by class (`.s0`…`.s5` series colours, `.grid`, `.mark`), so the page's one
 * stylesheet decides colours; a chart is a plain `<svg class="chart">` a test can count.
 */

/** Text for HTML or SVG content and attribute values (both quote kinds escaped). */
export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export interface Series {
  label: string;
  /** [x, y] pairs; points with a non-finite coordinate (or y ≤ 0 on a log axis) are left out. */
  points: readonly (readonly [number, number])[];
  /** 'line' joins the points; 'points' draws a dot per point; 'both' does both (default 'line'). */
  draw?: 'line' | 'points' | 'both';
  /** A tooltip per point (same order as `points`), e.g. the ranks of a candidate. */
  tips?: readonly string[];
}

export interface Marker {
  /** Where on the x axis (a vertical line) … */
  x: number;
  label: string;
}

export interface Highlight { x: number; y: number; label: string }

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  logY?: boolean;
  markers?: readonly Marker[];
  /** Points drawn larger and labelled (the chosen candidate). */
  highlights?: readonly Highlight[];
  width?: number;
  height?: number;
}

export interface BarChart {
  title: string;
  /** One row per category (a layer), bars of each group side by side. */
  categories: readonly string[];
  groups: readonly { label: string; values: readonly (number | undefined)[] }[];
  unit: string;
  width?: number;
}

const PAD = { left: 64, right: 16, top: 28, bottom: 44 };

/** Up to ~`count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

/** A short label for a tick or value: 3 significant digits, exponent form for very large or small numbers. */
export function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(0).replace('e+', 'e');
  return String(Number(v.toPrecision(3)));
}

const n2 = (v: number): string => (Math.round(v * 100) / 100).toString();

/** A line/point chart; returns '' when no series has a point to draw (callers leave the chart out). */
export function lineChart(c: LineChart): string {
  const W = c.width ?? 480;
  const H = c.height ?? 260;
  const ok = (x: number, y: number): boolean => Number.isFinite(x) && Number.isFinite(y) && (!c.logY || y > 0);
  const series = c.series.map((s) => {
    const kept = s.points.map((p, i) => ({ p, tip: s.tips?.[i] })).filter(({ p }) => ok(p[0], p[1]));
    return { ...s, kept };
  });
  const all = series.flatMap((s) => s.kept.map(({ p }) => p));
  for (const h of c.highlights ?? []) if (ok(h.x, h.y)) all.push([h.x, h.y]);
  if (all.length === 0) return '';
  const xs = [...all.map((p) => p[0]), ...(c.markers ?? []).map((m) => m.x)];
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  const ys = all.map((p) => p[1]);
  let y0: number;
  let y1: number;
  const ty = c.logY ? (v: number): number => Math.log10(v) : (v: number): number => v;
  if (c.logY) {
    y0 = Math.floor(Math.log10(Math.min(...ys)));
    y1 = Math.ceil(Math.log10(Math.max(...ys)));
    if (y1 === y0) y1 += 1;
  } else {
    y0 = Math.min(0, ...ys);
    y1 = Math.max(...ys);
    if (y1 === y0) y1 = y0 + 1;
  }
  const pw = W - PAD.left - PAD.right;
  const ph = H - PAD.top - PAD.bottom;
  const sx = (x: number): number => PAD.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number): number => PAD.top + ph - ((ty(y) - y0) / (y1 - y0)) * ph;
  const parts: string[] = [];
  parts.push(`<text class="title" x="${PAD.left}" y="16">${esc(c.title)}</text>`);
  // Grid and y ticks.
  const yTicks = c.logY ? range(y0, y1, Math.max(1, Math.ceil((y1 - y0) / 6))).map((e) => 10 ** e) : niceTicks(y0, y1);
  for (const t of yTicks) {
    const y = n2(sy(t));
    parts.push(`<line class="grid" x1="${PAD.left}" x2="${W - PAD.right}" y1="${y}" y2="${y}"/>`);
    parts.push(`<text class="tick" x="${PAD.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${esc(fmt(t))}</text>`);
  }
  for (const t of niceTicks(x0, x1, 6)) {
    const x = n2(sx(t));
    parts.push(`<line class="grid" x1="${x}" x2="${x}" y1="${PAD.top}" y2="${PAD.top + ph}"/>`);
    parts.push(`<text class="tick" x="${x}" y="${PAD.top + ph + 14}" text-anchor="middle">${esc(fmt(t))}</text>`);
  }
  parts.push(`<rect class="frame" x="${PAD.left}" y="${PAD.top}" width="${pw}" height="${ph}"/>`);
  parts.push(`<text class="axis" x="${PAD.left + pw / 2}" y="${H - 8}" text-anchor="middle">${esc(c.xLabel)}</text>`);
  parts.push(`<text class="axis" transform="translate(14 ${PAD.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`);
  series.forEach((s, i) => {
    const cls = `s${i % 6}`;
    const draw = s.draw ?? 'line';
    if (draw !== 'points' && s.kept.length > 1) {
      const d = s.kept.map(({ p }, j) => `${j === 0 ? 'M' : 'L'}${n2(sx(p[0]))} ${n2(sy(p[1]))}`).join(' ');
      parts.push(`<path class="line ${cls}" d="${d}"><title>${esc(s.label)}</title></path>`);
    }
    if (draw !== 'line' || s.kept.length === 1) {
      for (const { p, tip } of s.kept) {
        parts.push(`<circle class="dot ${cls}" cx="${n2(sx(p[0]))}" cy="${n2(sy(p[1]))}" r="3"><title>${esc(tip ?? `${s.label}: ${fmt(p[0])}, ${fmt(p[1])}`)}</title></circle>`);
      }
    }
  });
  for (const m of c.markers ?? []) {
    const x = n2(sx(m.x));
    parts.push(`<line class="mark" x1="${x}" x2="${x}" y1="${PAD.top}" y2="${PAD.top + ph}"><title>${esc(m.label)}</title></line>`);
    // Inside the frame, right of the line: above it the title would collide.
    parts.push(`<text class="mark-label" x="${n2(sx(m.x) + 4)}" y="${PAD.top + 12}">${esc(m.label)}</text>`);
  }
  for (const h of c.highlights ?? []) {
    if (!ok(h.x, h.y)) continue;
    parts.push(`<circle class="chosen" cx="${n2(sx(h.x))}" cy="${n2(sy(h.y))}" r="6"><title>${esc(h.label)}</title></circle>`);
  }
  const legend = series.length > 1 ? legendRow(series.map((s) => s.label), W, H + 10) : '';
  return svg(W, H + (legend ? 18 : 0), c.title, parts.join('') + legend);
}

/** Horizontal grouped bars, one row per category; returns '' when no value is known. */
export function barChart(c: BarChart): string {
  const W = c.width ?? 640;
  const values = c.groups.flatMap((g) => g.values.filter((v): v is number => v !== undefined && Number.isFinite(v)));
  if (values.length === 0 || c.categories.length === 0) return '';
  const labelW = Math.min(220, 12 + 6.5 * Math.max(...c.categories.map((s) => Math.min(s.length, 32))));
  const bar = 9;
  const rowH = bar * c.groups.length + 8;
  const top = 28;
  const H = top + rowH * c.categories.length + 54;
  const max = Math.max(...values, 0) || 1;
  const pw = W - labelW - 24;
  const sx = (v: number): number => labelW + (Math.max(0, v) / max) * pw;
  const parts: string[] = [`<text class="title" x="8" y="16">${esc(c.title)}</text>`];
  for (const t of niceTicks(0, max, 5)) {
    const x = n2(sx(t));
    parts.push(`<line class="grid" x1="${x}" x2="${x}" y1="${top}" y2="${top + rowH * c.categories.length}"/>`);
    parts.push(`<text class="tick" x="${x}" y="${top + rowH * c.categories.length + 14}" text-anchor="middle">${esc(fmt(t))}</text>`);
  }
  c.categories.forEach((cat, i) => {
    const y = top + i * rowH + 4;
    const shown = cat.length > 32 ? `${cat.slice(0, 31)}…` : cat;
    parts.push(`<text class="tick" x="${labelW - 6}" y="${n2(y + (rowH - 8) / 2)}" text-anchor="end" dominant-baseline="middle">${esc(shown)}<title>${esc(cat)}</title></text>`);
    c.groups.forEach((g, j) => {
      const v = g.values[i];
      if (v === undefined || !Number.isFinite(v)) return;
      const w = Math.max(1, sx(v) - labelW);
      parts.push(`<rect class="bar s${j % 6}" x="${labelW}" y="${n2(y + j * bar)}" width="${n2(w)}" height="${bar - 1}"><title>${esc(`${cat} — ${g.label}: ${fmt(v)} ${c.unit}`)}</title></rect>`);
    });
  });
  parts.push(`<text class="axis" x="${labelW + pw / 2}" y="${H - 24}" text-anchor="middle">${esc(c.unit)}</text>`);
  const legend = legendRow(c.groups.map((g) => g.label), W, H - 4);
  return svg(W, H, c.title, parts.join('') + legend);
}

function legendRow(labels: readonly string[], width: number, y: number): string {
  let x = PAD.left;
  const out: string[] = [];
  labels.forEach((l, i) => {
    if (x > width - 60) return;
    out.push(`<rect class="bar s${i % 6}" x="${x}" y="${y - 9}" width="10" height="10"/><text class="tick" x="${x + 14}" y="${y}">${esc(l)}</text>`);
    x += 24 + 6.5 * Math.min(l.length, 40);
  });
  return out.join('');
}

function range(a: number, b: number, step: number): number[] {
  const out: number[] = [];
  for (let v = a; v <= b; v += step) out.push(v);
  return out;
}

function svg(w: number, h: number, title: string, body: string): string {
  return `<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${esc(title)}">${body}</svg>`;
}
