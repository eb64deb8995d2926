/**
 * The browser build's stand-ins for Node modules (src/browser/node/): the model fingerprint
 * (graph/summary.ts) must hash as node:crypto does, or a plan made in the page would not
 * match the model on the command line; path functions must agree with POSIX node:path.
 */
import { createHash } from 'node:crypto';
import * as nodePath from 'node:path';
import { describe, expect, it } from 'vitest';
import { createHash as pageHash } from '../../src/browser/node/crypto.js';
import * as pagePath from '../../src/browser/node/path.js';
import * as fs from '../../src/browser/node/fs.js';

describe('browser stand-ins for Node modules', () => {
  it('sha256 matches node:crypto across block boundaries and in parts', () => {
    for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 70_000]) {
      const text = 'aé€'.repeat(n).slice(0, n);
      expect(pageHash('sha256').update(text).digest('hex')).toBe(createHash('sha256').update(text).digest('hex'));
    }
    const bytes = new Uint8Array(300).map((_, i) => (i * 37) & 255);
    expect(pageHash('sha256').update('layer\n').update(bytes).digest('hex'))
      .toBe(createHash('sha256').update('layer\n').update(bytes).digest('hex'));
    expect(() => pageHash('md5')).toThrow(/md5.*not available in the browser/);
  });

  it('path functions agree with node:path (POSIX)', () => {
    const cases = ['/a/b/c.onnx', 'c.onnx', 'a/b/', '/', 'a/../b/./c.data', '.hidden', 'x.tar.gz'];
    for (const p of cases) {
      expect(pagePath.basename(p)).toBe(nodePath.posix.basename(p));
      expect(pagePath.dirname(p)).toBe(nodePath.posix.dirname(p));
      expect(pagePath.extname(p)).toBe(nodePath.posix.extname(p));
      expect(pagePath.isAbsolute(p)).toBe(nodePath.posix.isAbsolute(p));
    }
    expect(pagePath.basename('/a/m.onnx', '.onnx')).toBe('m');
    expect(pagePath.join('a', 'b/../c', 'd.onnx')).toBe(nodePath.posix.join('a', 'b/../c', 'd.onnx'));
    expect(pagePath.join('/a', '..', '..', 'b')).toBe(nodePath.posix.join('/a', '..', '..', 'b'));
    expect(pagePath.resolve('/m', 'x/../y.onnx')).toBe(nodePath.posix.resolve('/m', 'x/../y.onnx'));
    expect(pagePath.relative('/a/b', '/a/c/d')).toBe(nodePath.posix.relative('/a/b', '/a/c/d'));
  });

  it('file calls say that a Node-only path was reached instead of doing nothing', () => {
    expect(() => fs.writeFileSync('/x', 'y')).toThrow('fs.writeFileSync is not available in the browser (a Node-only code path was reached)');
    expect(() => fs.readdirSync('/')).toThrow('fs.readdirSync is not available in the browser');
    expect(() => fs.openSync('/x', 'w')).toThrow(/not available in the browser/);
    // Reads too: the page restarts an error budget from its bytes (Job.reload), never from a path.
    expect(() => fs.readFileSync('/page/m.onnx')).toThrow('fs.readFileSync is not available in the browser');
  });
});
