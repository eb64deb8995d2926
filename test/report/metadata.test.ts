/** OUT's metadata_props: what made the file, read back from a model the CLI wrote (and ORT still loads it). */
import { copyFileSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { decodeModel } from '../../src/onnx/codec.js';
import { METADATA_KEYS } from '../../src/optimize/write-verify.js';
import { runCli } from '../helpers/cli.js';
import { CLS } from '../verify/models.js';

const metadataOf = (file: string): [string, string][] => decodeModel(readFileSync(file)).metadataProps.map((e) => [e.key ?? '', e.value ?? '']);

describe('the written model\'s metadata_props', () => {
  it('names the tool, version, command line, policy and verdict; ORT loads the file; the report counts its bytes', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-meta-'));
    const out = path.join(dir, 'out dir.onnx');
    const r = await runCli('optimize', CLS, out, '--shape', 'x:1x3x48x192', '--no-latency', '--report', path.join(dir, 'r.json'));
    expect(r.code, r.err).toBe(0);
    const meta = new Map(metadataOf(out));
    expect(meta.get(METADATA_KEYS.tool)).toBe('onnx-lr');
    expect(meta.get(METADATA_KEYS.version)).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version);
    // IN and OUT stand for the positional paths: the same options on other files write the same bytes.
    expect(meta.get(METADATA_KEYS.command)).toBe(`onnx-lr optimize IN OUT --shape x:1x3x48x192 --no-latency --report ${path.join(dir, 'r.json')}`);
    expect(meta.get(METADATA_KEYS.policy)).toBe('auto, energy 0.999');
    expect(meta.get(METADATA_KEYS.verdict)).toMatch(/^PASS \(3 run\(s\) in ONNX Runtime, worst output cosine 1\.0000, threshold 0\.99\)$/);
    // The verdict is appended after verification: the report's size is the file's, and ORT reads it.
    expect(JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8')).output.bytes).toBe(statSync(out).size);
    const s = await ort.InferenceSession.create(out);
    await s.release();
  }, 60_000);

  it('a failed check says FAIL, --no-verify says so, and re-optimizing an output replaces the entries instead of repeating them', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-meta-'));
    const a = path.join(dir, 'a.onnx');
    const failed = await runCli('optimize', CLS, a, '--shape', 'x:1x3x48x192', '--rank-ratio', '0.1', '--min-cosine', '0.99999', '--no-latency');
    expect(failed.code, failed.err).toBe(1);
    expect(new Map(metadataOf(a)).get(METADATA_KEYS.verdict)).toMatch(/^FAIL \(/);
    const again = path.join(dir, 'again.onnx');
    copyFileSync(a, again);
    const unchecked = await runCli('optimize', again, again, '--force', '--no-verify');
    expect(unchecked.code, unchecked.err).toBe(0);
    const entries = metadataOf(again);
    expect(entries.filter(([k]) => k.startsWith('onnx-lr.')).map(([k]) => k).sort()).toEqual(Object.values(METADATA_KEYS).sort());
    const meta = new Map(entries);
    expect(meta.get(METADATA_KEYS.verdict)).toBe('not verified (--no-verify)');
    expect(meta.get(METADATA_KEYS.command)).toContain('--no-verify');
  }, 60_000);
});
