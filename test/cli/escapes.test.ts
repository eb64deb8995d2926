/**
 * Terminal escapes in names (issue 16): model file names and node names with OSC/CSI
 * sequences, C1 controls and NULs are printed escaped (`\u00XX`), by every command, in
 * text and JSON, and the live progress line keeps only its own "clear line" sequence.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import type { InspectResult } from '../../src/cli/inspect.js';
import { main } from '../../src/cli/main.js';
import { escapeControls } from '../../src/cli/supervise.js';
import { encodeModel } from '../../src/onnx/codec.js';
import type { Report } from '../../src/report/report.js';
import { createRng } from '../../src/util/rng.js';
import { removeTmpDirs, tmpDir } from '../onnx/helpers.js';
import { runCli } from '../helpers/cli.js';

afterAll(removeTmpDirs);

/** Control characters a terminal acts on: everything in C0 but tab and newline, DEL, C1. */
const RAW_CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

// Retitles the terminal (OSC 0), turns text red and clears the screen (CSI), 8-bit CSI (C1), NUL, BS, CR.
const EVIL_NODE = 'mm\x1b]0;pwned\x07\x1b[31m\x1b[2J\x9b1m\x00\x08\rX';
const EVIL_OUTPUT = 'y\x1b]2;out\x07\x1b[5m';
const EVIL_FILE = 'evil\x1b]0;title\x07\x1b[1;31m\x85red.onnx';

function evilModel(dir: string): string {
  const rng = createRng(5);
  const w = Float32Array.from({ length: 64 * 64 }, () => rng.normal());
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [2, 64]);
  b.node('MatMul', [x, b.init('w', [64, 64], w)], {}, { name: EVIL_NODE });
  // ORT takes tensor names as C strings (no NUL), escapes are fine.
  b.graph.node[0]!.output = [EVIL_OUTPUT];
  b.output(EVIL_OUTPUT, [2, 64]);
  const f = path.join(dir, EVIL_FILE);
  fs.writeFileSync(f, encodeModel(b.build()));
  return f;
}

function expectNoRawControls(text: string): void {
  const bad = [...text].filter((c) => RAW_CONTROL.test(c)).map((c) => c.charCodeAt(0).toString(16));
  expect(bad).toEqual([]);
}

describe('escapeControls', () => {
  it('escapes C0 (but tab and newline), DEL and C1, and leaves the rest alone', () => {
    expect(escapeControls('a\x1b[31mb\x00c\x7fd\x9be\tf\ng\r')).toBe('a\\u001b[31mb\\u0000c\\u007fd\\u009be\tf\ng\\u000d');
    expect(escapeControls('plain ü € 日本 \\u001b')).toBe('plain ü € 日本 \\u001b');
    // JSON's escapes are plain ASCII: nothing is escaped twice.
    const json = JSON.stringify({ n: EVIL_NODE });
    expect(JSON.parse(escapeControls(json))).toEqual({ n: EVIL_NODE });
  });
});

describe('names with terminal escapes are printed escaped', () => {
  it('inspect (text and --json)', async () => {
    const f = evilModel(tmpDir());
    const r = await runCli('inspect', f);
    expect(r.code, r.err).toBe(0);
    expectNoRawControls(r.out + r.err);
    expect(r.out).toContain('mm\\u001b]0;pwned\\u0007\\u001b[31m');
    expect(r.out).toContain('evil\\u001b]0;title\\u0007');

    const j = await runCli('inspect', f, '--json');
    expect(j.code, j.err).toBe(0);
    expectNoRawControls(j.out + j.err);
    // Valid JSON, and the names come back exactly (escaped once, by JSON's own rules).
    const parsed = JSON.parse(j.out) as InspectResult;
    expect(parsed.layers.map((l) => l.name)).toEqual([EVIL_NODE]);
    expect(parsed.file).toContain(EVIL_FILE);
  });

  it('an error naming the file', async () => {
    const dir = tmpDir();
    const r = await runCli('inspect', path.join(dir, `missing${EVIL_FILE}`));
    expect(r.code).toBe(2);
    expectNoRawControls(r.err);
    expect(r.err).toMatch(/^onnx-lr: no such file: .*missingevil\\u001b\]0;title\\u0007/);
  });

  it('optimize (text, --json, and plan)', async () => {
    const dir = tmpDir();
    const f = evilModel(dir);
    const out = path.join(dir, `out${EVIL_FILE}`);
    const r = await runCli('optimize', f, out, '--rank', '8', '--min-params', '0', '--no-latency');
    expect(r.code, r.err).toBe(1); // rank 8 of a random 64x64 weight fails the cosine check; OUT is written
    expectNoRawControls(r.out + r.err);
    expect(r.out).toContain('mm\\u001b]0;pwned');
    expect(fs.existsSync(out)).toBe(true);

    const j = await runCli('optimize', f, out, '--rank', '8', '--min-params', '0', '--no-latency', '--json', '--force');
    expect(j.code, j.err).toBe(1);
    expectNoRawControls(j.out + j.err);
    const rep = JSON.parse(j.out) as Report;
    expect(rep.layers.map((l) => l.name)).toEqual([EVIL_NODE]);

    const p = await runCli('plan', f, '--rank', '8', '--min-params', '0');
    expect(p.code, p.err).toBe(0);
    expectNoRawControls(p.out + p.err);
    expect((JSON.parse(p.out) as { layers: { name: string }[] }).layers.map((l) => l.name)).toEqual([EVIL_NODE]);
  });

  it('the live progress line keeps only its own clear-line sequence', async () => {
    const dir = tmpDir();
    const f = evilModel(dir);
    let live = '';
    let text = '';
    const code = await main(['optimize', f, path.join(dir, 'o.onnx'), '--rank', '8', '--min-params', '0', '--no-verify'], {
      out: (s) => { text += `${s}\n`; }, err: (s) => { text += `${s}\n`; }, live: (s) => { live += s; },
    });
    expect(code, text).toBe(0);
    expectNoRawControls(text);
    expect(live).toContain('\r\x1b[K');
    // The layer name shows, escaped; the only raw controls left are the tool's own.
    expect(live).toContain('mm\\u001b]0;pwned');
    expectNoRawControls(live.split('\r\x1b[K').join(''));
  });
});
