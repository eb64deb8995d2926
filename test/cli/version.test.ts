/** TOOL_VERSION is package.json's version, from the sources and from an installed package's dist/. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { TOOL_NAME, TOOL_VERSION } from '../../src/report/version.js';
import { runCli } from '../helpers/cli.js';
import { ROOT } from '../helpers/models.js';

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

describe('the tool version', () => {
  it('is package.json\'s, and --version prints it', async () => {
    expect(TOOL_NAME).toBe(pkg.name);
    expect(TOOL_VERSION).toBe(pkg.version);
    const r = await runCli('--version');
    expect(r.out).toBe(`${pkg.name} ${pkg.version}\n`);
  });

  it('is read from the installed package\'s package.json by the compiled module (dist/src/report/version.js)', () => {
    // The installed layout: node_modules/onnx-lr/{package.json, dist/src/report/version.js}, outside this checkout.
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-version-'));
    const root = path.join(dir, 'node_modules', pkg.name);
    mkdirSync(path.join(root, 'dist', 'src', 'report'), { recursive: true });
    writeFileSync(path.join(root, 'package.json'), JSON.stringify({ ...pkg, version: '9.8.7-installed' }));
    const source = readFileSync(path.join(ROOT, 'src', 'report', 'version.ts'), 'utf8');
    const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } }).outputText;
    writeFileSync(path.join(root, 'dist', 'src', 'report', 'version.js'), js);
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(path.join(root, 'dist', 'src', 'report', 'version.js'))}); process.stdout.write(m.TOOL_VERSION);`], { cwd: dir, encoding: 'utf8' });
    expect(out).toBe('9.8.7-installed');
  });
});
