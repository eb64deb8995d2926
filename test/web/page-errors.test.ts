/**
 * What the page says when a run fails (src/browser/page-errors.ts), and which calibration
 * images it reads of a folder (src/browser/calib-images.ts): the files `--calib DIR` reads.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pngjs from 'pngjs';
import { describe, expect, it } from 'vitest';
import { loadCalibration } from '../../src/calib/load.js';
import { calibrationImages } from '../../src/browser/calib-images.js';
import { pageErrorMessage } from '../../src/browser/page-errors.js';

describe('the page\'s messages for a failed run', () => {
  it('says plainly that a model past what the tab can hold needs the command line', () => {
    for (const e of [new RangeError('Array buffer allocation failed'), new Error('failed to allocate a buffer of size 1234: bad_alloc'),
      new Error('RuntimeError: memory access out of bounds\n    at wasm-function[123]'), new RangeError('Invalid typed array length: 4294967296')]) {
      const m = pageErrorMessage(e, 'big.onnx');
      expect(m).toMatch(/^big\.onnx: the run needs more memory than this browser tab can hold \(.+\); use the command line, npx onnx-lr optimize, for this model$/);
      expect(m).not.toContain('\n');
    }
  });

  it('passes the library\'s own one-line messages through', () => {
    expect(pageErrorMessage(new Error('notes.onnx: not a valid ONNX protobuf (bad wire type)'), 'notes.onnx')).toBe('notes.onnx: not a valid ONNX protobuf (bad wire type)');
    expect(pageErrorMessage('--max-error cosine:C needs 0 < C < 1', 'm.onnx')).toBe('--max-error cosine:C needs 0 < C < 1');
  });
});

describe('calibration images the page reads', () => {
  it('are the files --calib DIR reads: images only, no dot files, in name order, at most N', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-page-calib-'));
    try {
      // Each image one grey level, so the CLI's feeds say which file each came from (the format is read from the bytes, not the name).
      const names = ['b.png', 'A.PNG', 'a.png', '.x.png', 'notes.txt', 'c.JPEG', 'Z.jpg', 'data.npy'];
      const level = new Map(names.map((n, k) => [n, 20 * (k + 1)]));
      for (const n of names) {
        const p = new pngjs.PNG({ width: 2, height: 2 });
        p.data = Buffer.alloc(16, level.get(n));
        writeFileSync(path.join(dir, n), n.endsWith('.txt') || n.endsWith('.npy') ? 'not an image' : pngjs.PNG.sync.write(p));
      }
      rmSync(path.join(dir, 'data.npy'));
      const files = names.map((name) => ({ name, bytes: new Uint8Array(4) }));
      for (const cap of [4, 64]) {
        const set = loadCalibration(dir, { inputs: [{ name: 'x', isTensor: true, type: 'float32', shape: [1, 3, 2, 2] }], samples: cap });
        if (!set.ok) throw set.error;
        const cliLevels = [...set.value.feeds()].map((f) => Math.round((f.x!.data as Float32Array)[0]! * 255));
        expect(calibrationImages(files, cap).map((f) => level.get(f.name))).toEqual(cliLevels);
      }
      expect(calibrationImages(files, 4).map((f) => f.name)).toEqual(['A.PNG', 'Z.jpg', 'a.png', 'b.png']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
