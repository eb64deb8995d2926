/**
 * Narrow conv outputs reordered out of ORT's blocked layout (rewrite/narrow-layout.ts):
 * which convs are sites, and that the barrier changes nothing ORT computes.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Model } from '../../src/graph/graph.js';
import { encodeModel } from '../../src/onnx/codec.js';
import type { ModelProto } from '../../src/onnx/schema.js';
import { insertLayoutBarriers, narrowSites } from '../../src/rewrite/narrow-layout.js';
import { createRng } from '../../src/util/rng.js';
import { machineNchwcBlock } from '../../src/verify/cpu-block.js';
import { narrowModel as model } from '../helpers/narrow-model.js';

const rng = createRng(12);

async function run(m: ModelProto, x: Float32Array, level: 'all' | 'disabled' = 'all'): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(encodeModel(m), { graphOptimizationLevel: level, intraOpNumThreads: 1 });
  try {
    const out = await s.run({ x: new ort.Tensor('float32', x, [1, 32, 16, 16]) });
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await s.release();
  }
}

/** The channels of each op type's outputs in ORT's profile of one run at level 'all' (the layout ORT ran them in). */
async function profiledChannels(m: ModelProto): Promise<Record<string, number[]>> {
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-narrow-'));
  const s = await ort.InferenceSession.create(encodeModel(m), { graphOptimizationLevel: 'all', intraOpNumThreads: 1, enableProfiling: true, profileFilePrefix: path.join(dir, 'p') });
  await s.run({ x: new ort.Tensor('float32', new Float32Array(32 * 16 * 16).fill(0.5), [1, 32, 16, 16]) });
  s.endProfiling();
  await s.release();
  const events = JSON.parse(readFileSync(path.join(dir, readdirSync(dir)[0]!), 'utf8')) as { cat?: string; name?: string; args?: { op_name?: string; output_type_shape?: Record<string, number[]>[] } }[];
  const out: Record<string, number[]> = {};
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.args?.op_name) continue;
    const dims = Object.values(e.args.output_type_shape?.[0] ?? {})[0];
    if (dims) (out[e.args.op_name] ??= []).push(dims[1]!);
  }
  return out;
}

describe('narrowSites', () => {
  it('finds the convs the block pads at least twofold that a non-Conv reads', () => {
    const m = new Model(model());
    const at16 = narrowSites(m, 16);
    expect(at16.map((s) => [s.conv, s.channels, s.padded, s.readers])).toEqual([
      ['head', 1, 16, ['Resize']], ['quad', 4, 16, ['Add']],
    ]);
    // Past the Relu ORT fuses into the conv (a Reshape before it would block the fusion); the head's value is a graph output, so it stops there.
    const relu = m.root.nodes.find((n) => n.opType === 'Relu' && n.input[0] === 'quad_out0')!;
    expect(at16.map((s) => s.value)).toEqual(['head_out0', relu.output[0]]);
    // An AVX2 machine's block of 8: 4 channels still pad twofold, 12 (to 16) do not.
    expect(narrowSites(m, 8).map((s) => s.conv)).toEqual(['head', 'quad']);
    // At 32, 12 channels pad twofold, but past its fused Relu the value is only a graph output: no reader to move the reorder before.
    expect(narrowSites(m, 32).map((s) => s.conv)).toEqual(['head', 'quad']);
    // No blocked layout, or Reshape without a shape input (opset < 5): nothing.
    expect(narrowSites(m, 1)).toEqual([]);
    expect(narrowSites(new Model(model({ opset: 4 })), 16)).toEqual([]);
  });

  it('sees a weight stored float16 behind a Cast', () => {
    expect(narrowSites(new Model(model({ half: true })), 16).map((s) => s.conv)).toEqual(['head', 'quad']);
  });
});

describe('insertLayoutBarriers', () => {
  it('changes nothing ORT computes, graph outputs included, and is put in once', async () => {
    for (const half of [false, true]) {
      const proto = model({ half });
      const x = Float32Array.from({ length: 32 * 16 * 16 }, () => rng.normal());
      const before = await run(proto, x);
      const m = new Model(proto);
      const sites = narrowSites(m, 16);
      expect(insertLayoutBarriers(m, sites)).toBe(2);
      expect(insertLayoutBarriers(m, sites)).toBe(0);
      // A model that has them has no sites left (optimize on an earlier OUT times nothing).
      expect(narrowSites(m, 16)).toEqual([]);
      const reshapes = proto.graph!.node.filter((n) => n.opType === 'Reshape');
      expect(reshapes.map((n) => n.input[0])).toEqual(sites.map((x) => x.value));
      // The readers read the Reshape; the head's logits stay a graph output under their name.
      const resize = proto.graph!.node.find((n) => n.opType === 'Resize')!;
      expect(resize.input[0]).toBe(reshapes[0]!.output[0]);
      expect(proto.graph!.output.map((o) => o.name)).toContain('head_out0');
      // Topological: each Reshape after its conv and before its readers.
      const at = (v: string): number => proto.graph!.node.findIndex((n) => n.output.includes(v));
      for (const r of reshapes) {
        expect(at(r.input[0]!)).toBeLessThan(proto.graph!.node.indexOf(r));
        for (const reader of proto.graph!.node.filter((n) => n.input.includes(r.output[0]!))) expect(proto.graph!.node.indexOf(reader)).toBeGreaterThan(proto.graph!.node.indexOf(r));
      }
      const after = await run(proto, x);
      expect(Object.keys(after).sort()).toEqual(Object.keys(before).sort());
      for (const k of Object.keys(before)) {
        const a = before[k]!;
        const b = after[k]!;
        let worst = 0;
        for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
        // The same arithmetic in another layout: equal to float rounding.
        expect(worst, k).toBeLessThan(1e-5);
      }
      // Unoptimized too (the Reshape is a real op, not something only ORT's fusions read).
      const plain = await run(proto, x, 'disabled');
      for (const k of Object.keys(before)) expect(plain[k]!.length).toBe(before[k]!.length);
    }
  });

  const block = machineNchwcBlock();
  it.skipIf(block === undefined)('makes ORT run the head\'s Resize and Sigmoid on its one channel, not on the block (skipped where ORT has no blocked layout: not x86-64)', async () => {
    const proto = model();
    const before = await profiledChannels(proto);
    // Without the barrier ORT pads the head to its block and resizes and squashes the padding too.
    expect(before.Sigmoid).toEqual([block]);
    const m = new Model(proto);
    insertLayoutBarriers(m, narrowSites(m, block!));
    const after = await profiledChannels(proto);
    expect(after.Sigmoid).toEqual([1]);
    expect(after.Resize ?? after.Upsample).toEqual([1]);
  });

  it('skips a site whose value is gone', () => {
    const m = new Model(model());
    const sites = narrowSites(m, 16);
    expect(insertLayoutBarriers(m, [{ ...sites[0]!, value: 'gone' }, sites[1]!])).toBe(1);
  });
});
