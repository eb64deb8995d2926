import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import type { InspectResult } from '../../src/cli/inspect.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import type { GraphProto, ModelProto } from '../../src/onnx/schema.js';
import { createRng } from '../../src/util/rng.js';
import { REAL, REAL_SHAPES, realModelArgs, type RealName } from '../helpers/models.js';
import { runCli } from '../helpers/cli.js';

const run = runCli;

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'onnx-lr-cli-'));

/** Counts made here, independently of the library's graph code. */
function independentCounts(m: ModelProto): { nodes: number; params: number; layers: number } {
  let nodes = 0;
  let params = 0;
  let layers = 0;
  const numel = (d: readonly number[]): number => d.reduce((a, b) => a * b, 1);
  const visit = (g: GraphProto, outerConst: Set<string>): void => {
    const consts = new Set(outerConst);
    for (const t of g.initializer) { params += numel(t.dims); consts.add(t.name!); }
    for (const n of g.node) if (n.opType === 'Constant') for (const o of n.output) consts.add(o);
    // Identity of a constant is still a constant.
    for (const n of g.node) if (n.opType === 'Identity' && consts.has(n.input[0])) consts.add(n.output[0]);
    for (const n of g.node) {
      nodes++;
      if (n.opType === 'Constant') {
        const t = n.attribute.find((a) => a.name === 'value')?.t;
        if (t) params += numel(t.dims);
      }
      const c = (i: number): boolean => consts.has(n.input[i]);
      if ((n.opType === 'Conv' || n.opType === 'ConvTranspose') && c(1)) layers++;
      if ((n.opType === 'Gemm' || n.opType === 'MatMul') && (c(1) !== c(0))) layers++;
      if (n.opType === 'Gather' && c(0)) layers++;
      for (const a of n.attribute) {
        if (a.g) visit(a.g, consts);
        for (const sg of a.graphs) visit(sg, consts);
      }
    }
  };
  visit(m.graph!, new Set());
  return { nodes, params, layers };
}

function feedsFor(s: ort.InferenceSession, shapes: string[]): Record<string, ort.Tensor> {
  const rng = createRng(7);
  const fixed = Object.fromEntries(shapes.map((x) => { const [n, d] = x.split(':'); return [n, d.split('x').map(Number)]; }));
  const feeds: Record<string, ort.Tensor> = {};
  for (const meta of s.inputMetadata) {
    if (!meta.isTensor) continue;
    const dims = fixed[meta.name] ?? meta.shape.map((d) => (typeof d === 'number' ? d : 1));
    const n = dims.reduce((a, b) => a * b, 1);
    if (meta.type === 'int64') feeds[meta.name] = new ort.Tensor('int64', BigInt64Array.from({ length: n }, () => 16000n), dims);
    else feeds[meta.name] = new ort.Tensor('float32', Float32Array.from({ length: n }, () => rng.normal()), dims);
  }
  return feeds;
}

describe('onnx-lr inspect', () => {
  for (const name of Object.keys(REAL) as RealName[]) {
    it(`counts match an independent count: ${name}`, async () => {
      const r = await run('inspect', REAL[name], ...realModelArgs(name), '--json');
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const j = JSON.parse(r.out) as InspectResult;
      const c = independentCounts(decodeModel(new Uint8Array(readFileSync(REAL[name]))));
      expect(j.nodeCount).toBe(c.nodes);
      expect(j.params).toBe(c.params);
      expect(j.layers).toHaveLength(c.layers);
      expect(j.irVersion).toBeGreaterThanOrEqual(4);
      expect(Object.values(j.ops).reduce((a, b) => a + b, 0)).toBe(c.nodes);
      // Main-graph layers get MACs from the ORT run; subgraph layers may not.
      for (const l of j.layers.filter((x) => x.subgraphDepth === 0)) expect(l.macs).not.toBeNull();
    });
  }

  it('prints a table with a note when dynamic dims default to 1', async () => {
    const r = await run('inspect', REAL.cls);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/decomposable layers: \d+/);
    expect(r.out).toMatch(/dynamic dims set to 1/);
  });
});

describe('onnx-lr convert', () => {
  for (const name of ['wake', 'cls', 'vad'] as RealName[]) {
    it(`round trip gives bit-identical ORT outputs: ${name}`, async () => {
      const dir = tmp();
      const out = path.join(dir, 'out.onnx');
      const r = await run('convert', REAL[name], out);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const a = await ort.InferenceSession.create(REAL[name]);
      const b = await ort.InferenceSession.create(out);
      const feeds = feedsFor(a, REAL_SHAPES[name]);
      const ya = await a.run(feeds);
      const yb = await b.run(feeds);
      for (const k of a.outputNames) expect(Buffer.from((yb[k].data as Float32Array).buffer).equals(Buffer.from((ya[k].data as Float32Array).buffer))).toBe(true);
    });
  }

  it('writes external data that ORT loads', async () => {
    const dir = tmp();
    const out = path.join(dir, 'ext.onnx');
    // The wake-word head keeps its weights in initializers (the OCR models use Constant nodes).
    const r = await run('convert', REAL.wake, out, '--external-data', '--threshold', '4096');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\.data/);
    expect(readdirSync(dir).filter((n) => /^ext\.onnx\.[0-9a-f]{12}\.data$/.test(n))).toHaveLength(1);
    const a = await ort.InferenceSession.create(REAL.wake);
    const b = await ort.InferenceSession.create(out);
    const feeds = feedsFor(a, []);
    const ya = await a.run(feeds);
    const yb = await b.run(feeds);
    for (const k of a.outputNames) expect(Array.from(yb[k].data as Float32Array)).toEqual(Array.from(ya[k].data as Float32Array));
  });
});

describe('bad input: one line on stderr, exit 2, nothing written', () => {
  const cases: [string, (dir: string) => string[]][] = [
    ['missing file', (d) => ['convert', path.join(d, 'nope.onnx'), path.join(d, 'o.onnx')]],
    ['not ONNX', (d) => { const f = path.join(d, 'x.onnx'); writeFileSync(f, 'hello, this is not a protobuf\n'); return ['convert', f, path.join(d, 'o.onnx')]; }],
    ['truncated protobuf', (d) => { const f = path.join(d, 't.onnx'); writeFileSync(f, readFileSync(REAL.cls).subarray(0, 100_000)); return ['convert', f, path.join(d, 'o.onnx')]; }],
    ['IR above 13', (d) => {
      const m = decodeModel(new Uint8Array(readFileSync(REAL.wake)));
      m.irVersion = 14;
      const f = path.join(d, 'ir.onnx');
      writeFileSync(f, encodeModel(m));
      return ['convert', f, path.join(d, 'o.onnx')];
    }],
    ['external data outside the folder', (d) => {
      const m = decodeModel(new Uint8Array(readFileSync(REAL.wake)));
      const t = m.graph!.initializer[0];
      delete t.rawData;
      t.dataLocation = 1;
      t.externalData = [{ key: 'location', value: '../../etc/passwd' }, { key: 'offset', value: '0' }, { key: 'length', value: '4' }];
      const f = path.join(d, 'e.onnx');
      writeFileSync(f, encodeModel(m));
      return ['convert', f, path.join(d, 'o.onnx')];
    }],
    ['unknown option', (d) => ['convert', REAL.wake, path.join(d, 'o.onnx'), '--bogus']],
    ['wrong argument count', () => ['inspect']],
    ['bad --shape', () => ['inspect', REAL.cls, '--shape', 'x:1xAx3']],
    ...['top1:1.5', 'top1:0', 'cosine:99%', 'top5:0.9', '0.1%'].map((e): [string, (d: string) => string[]] =>
      [`bad --max-error ${e}`, (d) => ['optimize', REAL.wake, path.join(d, 'o.onnx'), '--max-error', e]]),
    ['--stages without a budget', (d) => ['optimize', REAL.wake, path.join(d, 'o.onnx'), '--stages', '2']],
    ['--stages 0', (d) => ['optimize', REAL.wake, path.join(d, 'o.onnx'), '--stages', '0', '--target-params', '0.5']],
    ['--heaviest 0', (d) => ['optimize', REAL.wake, path.join(d, 'o.onnx'), '--heaviest', '0']],
    ['--heaviest 2.5', (d) => ['optimize', REAL.wake, path.join(d, 'o.onnx'), '--heaviest', '2.5']],
    ['--work-threads 0', (d) => ['optimize', REAL.wake, path.join(d, 'o.onnx'), '--work-threads', '0']],
    ['top1 budget on a model without a class axis', (d) => ['optimize', REAL.wake, path.join(d, 'o.onnx'), '--max-error', 'top1:0.9', '--min-params', '0']],
  ];
  for (const [label, make] of cases) {
    it(label, async () => {
      const dir = tmp();
      const r = await run(...make(dir));
      expect(r.code).toBe(2);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.err).toMatch(/^onnx-lr: /);
      expect(r.err).not.toMatch(/\n\s+at /);
      expect(existsSync(path.join(dir, 'o.onnx'))).toBe(false);
    });
  }

  it('refuses OUT equal to IN unless --force, and leaves IN untouched', async () => {
    const dir = tmp();
    const f = path.join(dir, 'm.onnx');
    copyFileSync(REAL.wake, f);
    const before = readFileSync(f);
    const r = await run('convert', f, f);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/same|--force/i);
    expect(readFileSync(f).equals(before)).toBe(true);
    const forced = await run('convert', f, f, '--force');
    expect(forced.code).toBe(0);
  });
});

describe('--help', () => {
  for (const cmd of ['inspect', 'convert', 'optimize', 'plan']) {
    it(`${cmd} --help describes its options`, async () => {
      const r = await run(cmd, '--help');
      expect(r.code).toBe(0);
      expect(r.out).toMatch(new RegExp(`Usage: onnx-lr ${cmd}`));
    });
  }
  it('top-level help lists the commands', async () => {
    const r = await run('--help');
    expect(r.code).toBe(0);
    for (const c of ['inspect', 'optimize', 'plan', 'convert']) expect(r.out).toContain(c);
  });
});
