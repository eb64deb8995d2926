/** Calibration images for the page's tests and measurements: seeded text-line-like PNGs and JPEGs, as a folder `--calib DIR` reads. */
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { createRng } from '../../src/util/rng.js';

/** A text-line-like image (RGBA): light paper, dark glyph-sized strokes, from `seed`. */
export function textLine(seed: number, w: number, h: number): Uint8Array {
  const rng = createRng(seed);
  const px = new Uint8Array(w * h * 4);
  const paper = [200 + rng.int(50), 200 + rng.int(50), 190 + rng.int(60)];
  for (let i = 0; i < w * h; i++) { px.set(paper.map((c) => Math.max(0, c - rng.int(20))), i * 4); px[i * 4 + 3] = 255; }
  const ink = [rng.int(80), rng.int(80), rng.int(80)];
  // Lines of glyphs: one for a strip, several for a page-sized image.
  const lineH = Math.min(h, 48);
  for (let y0 = 0; y0 + lineH <= h; y0 += lineH + rng.int(lineH)) {
    for (let x = 4 + rng.int(8); x < w - 12; x += 6 + rng.int(10)) {
      const [cw, ch] = [3 + rng.int(8), Math.floor(lineH * (0.3 + 0.5 * rng.next()))];
      const top = y0 + Math.floor((lineH - ch) / 2) + rng.int(5) - 2;
      for (let k = 0; k < 3; k++) {
        // Strokes: a vertical, horizontal or diagonal bar inside the glyph's box.
        const kind = rng.int(3);
        for (let t = 0; t < ch; t++) {
          const [yy, xx] = kind === 0 ? [top + t, x + rng.int(2)] : kind === 1 ? [top + Math.floor(ch / 2), x + Math.floor((t * cw) / ch)] : [top + t, x + Math.floor((t * cw) / ch)];
          if (yy >= 0 && yy < h && xx >= 0 && xx < w) px.set(ink, (yy * w + xx) * 4);
        }
      }
    }
  }
  return px;
}

/**
 * Writes `dir`/`name`/ with one image per [width, height] (every `jpegEvery`-th a JPEG, the
 * others PNGs), a text file and a dot file (both skipped by `--calib DIR`); returns its path.
 * `jpegEvery` 1 writes JPEGs only, which Node decodes without a browser.
 */
export function writeCalibFolder(dir: string, name: string, sizes: readonly (readonly [number, number])[], jpegEvery = 4): string {
  const out = path.join(dir, name);
  mkdirSync(out);
  sizes.forEach(([w, h], k) => {
    const data = textLine(100 + k, w, h);
    const file = path.join(out, `line${String(k).padStart(3, '0')}`);
    if (k % jpegEvery === jpegEvery - 1) {
      writeFileSync(`${file}.jpg`, jpeg.encode({ width: w, height: h, data }, 90).data);
    } else {
      const p = new pngjs.PNG({ width: w, height: h });
      p.data = Buffer.from(data);
      writeFileSync(`${file}.png`, pngjs.PNG.sync.write(p));
    }
  });
  writeFileSync(path.join(out, 'README.txt'), 'not an image');
  writeFileSync(path.join(out, '.hidden.png'), 'dot files are skipped');
  return out;
}
