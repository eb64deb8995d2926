/**
 * The README's "Library" example, taken from README.md (so the two cannot drift) and run
 * as its own program on the real model it names, with 'onnx-lr' pointing at the sources.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { removeTmpDirs, tmpDir } from '../onnx/helpers.js';

afterAll(removeTmpDirs);

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The first ```ts block of the README's "## Library" section. */
export function readmeLibraryExample(): string {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((s) => s.startsWith('Library\n'));
  if (!section) throw new Error('README.md has no "## Library" section');
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('the README\'s Library section has no ```ts example');
  return m[1]!;
}

describe('README Library example', () => {
  it('imports from onnx-lr only, and runs as written: it optimizes the model it names and prints the report', () => {
    const code = readmeLibraryExample();
    expect(code).toMatch(/from 'onnx-lr';/);
    expect(code).not.toMatch(/from '(?!onnx-lr')/);
    const file = path.join(tmpDir(), 'example.mts');
    fs.writeFileSync(file, code.replaceAll("from 'onnx-lr'", `from '${path.join(ROOT, 'src/index.ts')}'`));
    const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    expect(r.status, r.stderr).toBe(0);
    // The report table, as `onnx-lr optimize` prints it, then the example's own line.
    expect(r.stdout).toMatch(/^onnx-lr optimize: node_modules\/@gutenye\/ocr-models\/assets\/ch_ppocr_mobile_v2\.0_cls_infer\.onnx -> <\d+ bytes> {3}\(min output cosine 0\.995/);
    expect(r.stdout).toMatch(/verification \(ORT-node, 3 run\(s\), seeded random inputs\): PASS {2}\[min cosine 0\.995\]/);
    const last = r.stdout.trimEnd().split('\n').at(-1)!.split(' ');
    expect(last[0]).toBe('PASS');
    expect(Number(last[1])).toBeGreaterThan(0);
    expect(Number(last[1])).toBeLessThan(1); // the budget rewrote something
    expect(Number(last[2])).toBeGreaterThan(100_000); // the optimized model's bytes
  });
});
