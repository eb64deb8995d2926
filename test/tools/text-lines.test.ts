/**
 * The benches' rendered text (tools/text-lines.ts) is what it claims to be: PP-OCRv4 rec
 * reads the lines drawn (greedy CTC over its dictionary), det marks the lines of a page,
 * and a seed gives the same images every time.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { REAL_MODELS } from '../../models/real.js';
import { decodeImage, imageToTensor } from '../../src/calib/image.js';
import { createSession, type Session } from '../../src/verify/session.js';
import { renderTextImages } from '../../tools/text-lines.js';
import { chromiumOrSkip } from '../web/chromium.js';

const haveChromium = chromiumOrSkip(import.meta.filename);

async function session(path: string): Promise<Session> {
  const s = await createSession({ path });
  if (!s.ok) throw s.error;
  return s.value;
}

function tensor(png: Buffer, height: number, width: number, mean: number[], std: number[]): Float32Array {
  const img = decodeImage(png, 'line.png');
  if (!img.ok) throw img.error;
  return imageToTensor(img.value, { height, width, channels: 3, mean, std });
}

describe.runIf(haveChromium)('rendered text for the benches', () => {
  it('rec reads the lines drawn; a seed renders the same bytes again', async () => {
    const t = { seed: 11, count: 12, width: 320, height: 48 };
    const lines = await renderTextImages(t);
    expect((await renderTextImages(t)).map((l) => l.png.toString('base64'))).toEqual(lines.map((l) => l.png.toString('base64')));
    const other = await renderTextImages({ ...t, seed: 12, count: 1 });
    expect(other[0]!.png.equals(lines[0]!.png)).toBe(false);
    const dict = readFileSync(REAL_MODELS.rec.path.replace(/ch_PP-OCRv4_rec_infer\.onnx$/, 'ppocr_keys_v1.txt'), 'utf8').split('\n');
    // Index 0 is CTC's blank; the dictionary's lines, then a space.
    const keys = ['', ...dict.slice(0, dict.at(-1) === '' ? -1 : undefined), ' '];
    const rec = await session(REAL_MODELS.rec.path);
    const read: string[] = [];
    for (const { png } of lines) {
      const r = await rec.run({ x: { type: 'float32', dims: [1, 3, 48, 320], data: tensor(png, 48, 320, [0.5], [0.5]) } });
      if (!r.ok) throw r.error;
      const y = Object.values(r.value)[0]!;
      const [, steps, classes] = y.dims;
      const p = y.data as Float32Array;
      let text = '';
      let prev = -1;
      for (let s = 0; s < steps!; s++) {
        let best = 0;
        for (let c = 1; c < classes!; c++) if (p[s * classes! + c]! > p[s * classes! + best]!) best = c;
        if (best !== prev && best !== 0) text += keys[best];
        prev = best;
      }
      read.push(text.trim());
    }
    await rec.release();
    const right = read.filter((r, i) => r === lines[i]!.text).length;
    expect(right, `read ${JSON.stringify(read)}, drawn ${JSON.stringify(lines.map((l) => l.text))}`).toBeGreaterThanOrEqual(9);
  });

  it('det marks the lines of a page', async () => {
    const pages = await renderTextImages({ seed: 13, count: 2, width: 320, height: 320, lines: 8 });
    expect(pages.every((p) => p.text.split('\n').length === 8)).toBe(true);
    const det = await session(REAL_MODELS.det.path);
    for (const { png } of pages) {
      const r = await det.run({ x: { type: 'float32', dims: [1, 3, 320, 320], data: tensor(png, 320, 320, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) } });
      if (!r.ok) throw r.error;
      const map = Object.values(r.value)[0]!.data as Float32Array;
      // Text lines cover a few percent of a page to a third of it; noise or a blank page ~0.
      const marked = map.filter((v) => v > 0.3).length / map.length;
      expect(marked).toBeGreaterThan(0.03);
      expect(marked).toBeLessThan(0.35);
    }
    await det.release();
  });
});
