/**
 * Rendered text: real-looking inputs for the benches of PP-OCR rec (one-line crops) and
 * det (pages of lines). N(0,1) noise is not what they see (rec's softmax on noise is a flat
 * guess, det's map is empty), and npm ships no text images. Headless Chromium (Debian's,
 * as the page's tests use it) draws each image on a 2-D canvas: words from a fixed list, numbers, dates and prices, in the fonts installed
 * (DejaVu, Liberation), with random sizes, weights, colours, backgrounds, slants and blur,
 * all from one seed, so a folder is the same on every machine with the same fonts.
 * Bench data only, cached next to ISNet (node_modules/.cache/onnx-lr/text-lines/).
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { makeFolder } from './bench-util.js';
import { CHROMIUM, haveChromium, launchChromium } from './chromium.js';
import { ROOT } from '../models/real.js';

const WORDS = (
  'the of and to in is was for on that with as by at from his her they this have had are not but be or which one all were ' +
  'when there an their been has would more if will out so said what up its about into than them can only other new some ' +
  'time could these two may then first any my now such like our over man me even most made after also did many before must ' +
  'through back years where much your way well down should because each just those people how too little state good very make ' +
  'world still own see men work long get here between both life being under never day same another know while last might us ' +
  'great old year off come since against go came right used take three street road station hotel market bank school open ' +
  'closed exit entrance parking total price receipt invoice order number date phone email address north south east west ' +
  'coffee tea bread milk water fresh sale discount free delivery monday friday january march october december'
).split(' ');

/**
 * Draws `count` images of `width`×`height` in the page, each with `lines` lines of text (1:
 * a recogniser's crop, the line filling its height; more: a page for a detector), and
 * returns each as a PNG data URL with its text (lines joined by newlines).
 */
function drawLines(arg: { seed: number; count: number; width: number; height: number; lines: number; words: string[] }): { url: string; text: string }[] {
  let s = arg.seed >>> 0;
  // mulberry32: a small seeded generator, the same in every browser.
  const rnd = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const fonts = ['DejaVu Sans', 'DejaVu Serif', 'DejaVu Sans Mono', 'Liberation Sans', 'Liberation Serif', 'Liberation Mono', 'DejaVu Sans Condensed', 'Liberation Sans Narrow'];
  const token = (): string => {
    const r = rnd();
    if (r < 0.08) return String(Math.floor(rnd() * 10000));
    if (r < 0.12) return `${(rnd() * 500).toFixed(2)}`;
    if (r < 0.15) return `${2000 + Math.floor(rnd() * 30)}-${String(1 + Math.floor(rnd() * 12)).padStart(2, '0')}-${String(1 + Math.floor(rnd() * 28)).padStart(2, '0')}`;
    const w = pick(arg.words);
    const c = rnd();
    const word = c < 0.15 ? w.toUpperCase() : c < 0.4 ? w[0]!.toUpperCase() + w.slice(1) : w;
    return rnd() < 0.1 ? word + pick([',', '.', ':', '!', '?']) : word;
  };
  // Runs in the page: its DOM types are not in this (Node) program's lib.
  const canvas = (globalThis as unknown as { document: any }).document.createElement('canvas');
  canvas.width = arg.width;
  canvas.height = arg.height;
  const ctx = canvas.getContext('2d');
  const grey = (lo: number, hi: number): number => Math.round(lo + rnd() * (hi - lo));
  const colour = (lo: number, hi: number): string => {
    const g = grey(lo, hi);
    const tint = (): number => Math.max(0, Math.min(255, g + grey(-30, 30)));
    return `rgb(${tint()},${tint()},${tint()})`;
  };
  const out: { url: string; text: string }[] = [];
  for (let i = 0; i < arg.count; i++) {
    const drawn: string[] = [];
    const dark = rnd() < 0.2;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.filter = 'none';
    const bg = ctx.createLinearGradient(0, 0, arg.width, arg.height * rnd());
    bg.addColorStop(0, dark ? colour(10, 80) : colour(170, 255));
    bg.addColorStop(1, dark ? colour(10, 80) : colour(170, 255));
    ctx.fillStyle = bg;
    ctx.fillRect(0, 0, arg.width, arg.height);
    // A few faint strokes: paper texture, table rules, the edge of a neighbouring line.
    for (let k = Math.floor(rnd() * 4) * Math.min(arg.lines, 2); k > 0; k--) {
      ctx.strokeStyle = dark ? colour(60, 120) : colour(130, 220);
      ctx.lineWidth = 0.5 + rnd() * 1.5;
      ctx.beginPath();
      ctx.moveTo(rnd() * arg.width, rnd() * arg.height);
      ctx.lineTo(rnd() * arg.width, rnd() * arg.height);
      ctx.stroke();
    }
    for (let l = 0; l < arg.lines; l++) {
      // One line fills a crop's height; a page's lines each take a slot of its height.
      const one = arg.lines === 1;
      const slot = arg.height / arg.lines;
      const size = Math.round(one ? arg.height * (0.5 + rnd() * 0.3) : Math.min(36, slot * (0.3 + rnd() * 0.5)));
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.filter = 'none';
      ctx.font = `${pick(['', 'bold ', 'italic ', ''])}${size}px "${pick(fonts)}"`;
      const x = one ? 2 + rnd() * 14 : rnd() * arg.width * 0.6;
      const room = Math.min(arg.width - x - 4, arg.width * (0.45 + rnd() * 0.55));
      let text = token();
      for (let next = `${text} ${token()}`; ctx.measureText(next).width < room; next = `${text} ${token()}`) text = next;
      ctx.fillStyle = dark ? colour(190, 255) : colour(0, 90);
      ctx.textBaseline = 'middle';
      ctx.translate(x, one ? arg.height / 2 + (rnd() - 0.5) * arg.height * 0.15 : (l + 0.5 + (rnd() - 0.5) * 0.3) * slot);
      ctx.rotate((rnd() - 0.5) * (one ? 0.05 : 0.1));
      if (rnd() < 0.3) ctx.filter = `blur(${(0.3 + rnd() * 0.7).toFixed(2)}px)`;
      ctx.fillText(text, 0, 0);
      drawn.push(text);
    }
    out.push({ url: canvas.toDataURL('image/png'), text: drawn.join('\n') });
  }
  return out;
}

export interface TextImages {
  /** Distinct seeds give disjoint calibration and held-out sets. */
  seed: number;
  count: number;
  width: number;
  height: number;
  /** Lines of text per image: 1 for a recogniser's crops, more for a detector's pages. */
  lines?: number;
}

/** `count` images of text rendered in Chromium: each PNG's bytes and the text drawn on it. */
export async function renderTextImages(t: TextImages): Promise<{ png: Buffer; text: string }[]> {
  if (!haveChromium) throw new Error(`rendering text needs Chromium at ${CHROMIUM} (apt-get install chromium)`);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    // tsx compiles drawLines with esbuild's keepNames, whose __name helper the page lacks.
    await page.evaluate('globalThis.__name = (f) => f');
    const drawn = await page.evaluate(drawLines, { ...t, lines: t.lines ?? 1, words: WORDS });
    return drawn.map(({ url, text }) => ({ png: Buffer.from(url.slice(url.indexOf(',') + 1), 'base64'), text }));
  } finally {
    await browser.close();
  }
}

/** A folder of `count` rendered PNGs, made on first use. */
export async function ensureTextImages(t: TextImages, cache = path.join(ROOT, 'node_modules', '.cache', 'onnx-lr')): Promise<string> {
  const { seed, count, width, height, lines = 1 } = t;
  const dir = path.join(cache, 'text-lines', `${width}x${height}${lines === 1 ? '' : `-lines${lines}`}-seed${seed}-n${count}`);
  if (existsSync(dir) && readdirSync(dir).length === count) return dir;
  process.stderr.write(`rendering ${count} images of text (seed ${seed}) in Chromium…\n`);
  const images = await renderTextImages(t);
  makeFolder(dir, (tmp) => images.forEach(({ png }, i) => writeFileSync(path.join(tmp, `line-${String(i).padStart(4, '0')}.png`), png)));
  return dir;
}
