/**
 * The CLI as a supervisor and a worker (src/cli/supervise.ts), run as real processes:
 * an ONNX Runtime abort, a memory bomb or a signal ends in one `onnx-lr:` line and a
 * chosen exit code, never a dead tool; exit codes and output pass through unchanged.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { int64Tensor, ModelBuilder } from '../../models/builder.js';
import { describeEnd } from '../../src/cli/supervise.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { AttributeType, newAttribute, newNode, type FunctionProto } from '../../src/onnx/schema.js';
import { createRng } from '../../src/util/rng.js';
import { runCli } from '../helpers/cli.js';
import { listDir, removeTmpDirs, tmpDir } from '../onnx/helpers.js';

afterAll(removeTmpDirs);

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CHILD = path.join(ROOT, 'test/fuzz/cli-child.ts');
const linux = process.platform === 'linux';

interface Run { code: number | null; signal: NodeJS.Signals | null; out: string; err: string }

function cli(args: readonly string[], env: Record<string, string> = {}): Run {
  const p = spawnSync(process.execPath, ['--import', 'tsx', CHILD, ...args], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024,
  });
  return { code: p.status, signal: p.signal, out: p.stdout, err: p.stderr };
}

function expectOneLine(r: Run, code: number, re: RegExp): void {
  expect(r.signal, r.err).toBeNull();
  expect(r.code, r.err).toBe(code);
  const lines = r.err.trimEnd().split('\n');
  expect(lines, r.err).toHaveLength(1);
  expect(lines[0]).toMatch(/^onnx-lr: /);
  expect(lines[0]).toMatch(re);
  expect(r.out).toBe('');
}

/**
 * A local function whose body is a Split with `num_outputs` from the function's attribute
 * (`ref_attr_name`), called with 2 for 4 outputs: ORT 1.30's shape inference indexes past
 * the split sizes and fails a C++ assertion (SIGABRT) while loading it.
 */
function abortModel(dir: string): string {
  const b = new ModelBuilder({ opset: 18 });
  const x = b.input('x', [4, 8]);
  const outs = ['y0', 'y1', 'y2', 'y3'];
  b.graph.node.push(newNode({
    opType: 'SplitFn', domain: 'local', input: [x], output: outs, name: 'call',
    attribute: [newAttribute({ name: 'n', type: AttributeType.INT, i: 2n })],
  }));
  for (const o of outs) b.output(o);
  // A decomposable layer too, so that inspect runs the model in ORT (for its shapes).
  b.output(b.node('MatMul', [x, b.init('w', [8, 8], new Float32Array(64).fill(0.5))], {}, { name: 'mm' }), [4, 8]);
  const m = b.build();
  m.opsetImport.push({ domain: 'local', version: 1 });
  const fn: FunctionProto = {
    name: 'SplitFn', domain: 'local', input: ['a'], output: ['o0', 'o1', 'o2', 'o3'], attribute: ['n'], attributeProto: [],
    node: [newNode({ opType: 'Split', input: ['a'], output: ['o0', 'o1', 'o2', 'o3'], attribute: [newAttribute({ name: 'num_outputs', type: AttributeType.INT, refAttrName: 'n' })] })],
    opsetImport: [{ domain: '', version: 18 }], valueInfo: [], metadataProps: [],
  };
  m.functions.push(fn);
  const f = path.join(dir, 'abort.onnx');
  fs.writeFileSync(f, encodeModel(m));
  return f;
}

/** 120 bytes whose one ConstantOfShape output is n×n floats (1.6 GB at n = 20000). */
function bombModel(dir: string, n: number): string {
  const b = new ModelBuilder({ opset: 13 });
  b.graph.initializer.push(int64Tensor('shape', [2], [n, n]));
  b.output(b.node('ConstantOfShape', ['shape'], {}, { name: 'big' }));
  // A decomposable layer too, so that inspect runs the model in ORT (for its shapes).
  const x = b.input('x', [1, 8]);
  b.output(b.node('MatMul', [x, b.init('w', [8, 8], new Float32Array(64).fill(0.5))], {}, { name: 'mm' }), [1, 8]);
  const f = path.join(dir, 'bomb.onnx');
  fs.writeFileSync(f, encodeModel(b.build()));
  return f;
}

/** x [2, 64] → MatMul by a random 64×64 weight: rank 8 cannot pass verification (exit 1). */
function matmulModel(dir: string): string {
  const rng = createRng(9);
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [2, 64]);
  b.output(b.node('MatMul', [x, b.init('w', [64, 64], Float32Array.from({ length: 4096 }, () => rng.normal()))], {}, { name: 'mm' }), [2, 64]);
  const f = path.join(dir, 'mm.onnx');
  fs.writeFileSync(f, encodeModel(b.build()));
  return f;
}

/** A PID that no process has now (a process that has just ended). */
function deadPid(): number {
  const p = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(p.stdout);
}

describe('ONNX Runtime aborting the process', () => {
  it('the test model really aborts ORT 1.30 in a bare process (SIGABRT)', () => {
    const f = abortModel(tmpDir());
    const code = `import * as ort from 'onnxruntime-node'; await ort.InferenceSession.create(${JSON.stringify(f)}, { logSeverityLevel: 4 }); console.log('loaded');`;
    const p = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8' });
    expect(p.signal, p.stdout + p.stderr).toBe('SIGABRT');
  });

  it('inspect: exit 2, one line naming the model, no crash output', () => {
    const f = abortModel(tmpDir());
    const r = cli(['inspect', f]);
    expectOneLine(r, 2, /^onnx-lr: ONNX Runtime crashed \(SIGABRT\) while processing .*abort\.onnx; the model is probably malformed/);
    expect(r.err).not.toMatch(/Assertion|stl_vector/);
  });

  it('with ONNX_LR_DEBUG the crash output is shown before the line', () => {
    const r = cli(['inspect', abortModel(tmpDir())], { ONNX_LR_DEBUG: '1' });
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/Assertion[^]*\nonnx-lr: ONNX Runtime crashed \(SIGABRT\)/);
  });

  it('optimize: exit 2, one line, no OUT and no temp file; stale temps beside OUT are cleared', () => {
    const dir = tmpDir();
    const f = abortModel(dir);
    const stale = `.onnx-lr-${deadPid()}-0.tmp`;
    fs.writeFileSync(path.join(dir, stale), 'left by a killed run');
    const r = cli(['optimize', f, path.join(dir, 'out.onnx'), '--min-params', '0']);
    expectOneLine(r, 2, /ONNX Runtime crashed \(SIGABRT\) while processing .*abort\.onnx/);
    expect(listDir(dir)).toEqual(['abort.onnx']);
  });

  it('any crash of the worker (process.abort) and a SIGKILL get their own line', () => {
    expectOneLine(cli(['inspect', 'm.onnx'], { ONNX_LR_TEST_WORKER: 'abort' }), 2, /^onnx-lr: ONNX Runtime crashed \(SIGABRT\) while processing m\.onnx/);
    expectOneLine(cli(['inspect', 'm.onnx'], { ONNX_LR_TEST_WORKER: 'kill' }), 2, /^onnx-lr: the worker was killed \(SIGKILL\) while processing m\.onnx: most likely the system ran out of memory/);
  });

  it("a killed optimize worker's working folder (a --compute float32 copy in the temp folder) is removed by the supervisor", () => {
    const tmp = tmpDir();
    const r = cli(['optimize', 'm.onnx', path.join(tmp, 'o.onnx')], { ONNX_LR_TEST_WORKER: 'workdir-kill', TMPDIR: tmp });
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(/the worker was killed \(SIGKILL\)/);
    expect(listDir(tmp).filter((f) => f.startsWith('onnx-lr-work-'))).toEqual([]);
  });
});

describe('the memory limit', () => {
  it.skipIf(!linux)('a 120-byte model allocating 1.6 GB: --max-memory 0.5 stops it with a clear line', () => {
    const f = bombModel(tmpDir(), 20000);
    const re = /^onnx-lr: ran out of memory while processing .*bomb\.onnx: the worker passed the 0\.5 GiB limit \(--max-memory GIB or ONNX_LR_MAX_MEMORY raises it\)/;
    expectOneLine(cli(['inspect', f, '--max-memory', '0.5']), 2, re);
    expectOneLine(cli(['--max-memory=0.5', 'inspect', f]), 2, re);
    expectOneLine(cli(['inspect', f], { ONNX_LR_MAX_MEMORY: '0.5' }), 2, re);
  });

  it.skipIf(!linux)('a model with no decomposable layer is not run at all: inspect of the same bomb without its layer stays within 0.5 GiB', () => {
    const dir = tmpDir();
    const b = new ModelBuilder({ opset: 13 });
    b.graph.initializer.push(int64Tensor('shape', [2], [20000, 20000]));
    b.output(b.node('ConstantOfShape', ['shape'], {}, { name: 'big' }));
    const f = path.join(dir, 'nolayer.onnx');
    fs.writeFileSync(f, encodeModel(b.build()));
    const r = cli(['inspect', f, '--max-memory', '0.5']);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('decomposable layers: 0');
  });

  it('bad values are usage errors naming the option or the variable', () => {
    expectOneLine(cli(['inspect', 'm.onnx', '--max-memory', '0']), 2, /--max-memory expects a size in GiB greater than 0 .*got "0"/);
    expectOneLine(cli(['inspect', 'm.onnx', '--max-memory=lots']), 2, /--max-memory expects a size in GiB .*got "lots"/);
    expectOneLine(cli(['inspect', 'm.onnx', '--max-memory']), 2, /--max-memory expects a size in GiB/);
    expectOneLine(cli(['inspect', 'm.onnx'], { ONNX_LR_MAX_MEMORY: '-1' }), 2, /ONNX_LR_MAX_MEMORY expects a size in GiB/);
  });

  it('every command accepts it, in the worker and in-process alike', async () => {
    const dir = tmpDir();
    const f = matmulModel(dir);
    for (const argv of [
      ['inspect', f, '--max-memory', '8'], ['plan', '--max-memory=8', f, '--rank', '8', '--min-params', '0'],
      ['convert', f, path.join(dir, 'c.onnx'), '--max-memory', '8'], ['--max-memory', '8', 'optimize', f, path.join(dir, 'o.onnx'), '--rank', '8', '--min-params', '0', '--no-verify'],
    ]) {
      const inProcess = await runCli(...argv);
      expect(inProcess.code, `${argv.join(' ')}: ${inProcess.err}`).toBe(0);
    }
    const r = cli(['convert', f, path.join(dir, 'c2.onnx'), '--max-memory', '8']);
    expect(r.code, r.err).toBe(0);
  });
});

describe('exit codes and output pass through', () => {
  it('0 with the same stdout as in-process, 1 (verification failed), 2 (a user error)', async () => {
    const dir = tmpDir();
    const f = matmulModel(dir);
    const ok = cli(['inspect', f]);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toBe((await runCli('inspect', f)).out);

    const failed = cli(['optimize', f, path.join(dir, 'o.onnx'), '--rank', '8', '--min-params', '0', '--no-latency']);
    expect(failed.code, failed.err).toBe(1);
    expect(failed.out).toMatch(/FAIL/);
    expect(fs.existsSync(path.join(dir, 'o.onnx'))).toBe(true);

    expectOneLine(cli(['inspect', path.join(dir, 'missing.onnx')]), 2, /^onnx-lr: no such file: .*missing\.onnx$/);
    expectOneLine(cli(['frobnicate']), 2, /unknown command "frobnicate"/);
    const v = cli(['--version']);
    expect([v.code, v.out]).toEqual([0, 'onnx-lr 0.1.0\n']);
  });

  it("the worker's own stderr output is passed on when it ends normally (colours dropped)", () => {
    const r = cli(['inspect', 'x'], { ONNX_LR_TEST_WORKER: 'native' });
    expect(r.code).toBe(0);
    expect(r.err).toBe('native warning\n');
  });
});

describe('signals', () => {
  /** Starts the CLI with a test worker; waitFor resolves once its stderr matches. */
  function started(mode: string): { child: ReturnType<typeof spawn>; err: () => string; waitFor: (re: RegExp) => Promise<void>; done: Promise<Run> } {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, 'inspect', 'm.onnx'], {
      cwd: ROOT, env: { ...process.env, ONNX_LR_TEST_WORKER: mode }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const waiters: { re: RegExp; resolve: () => void }[] = [];
    child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString();
      for (const w of waiters.splice(0)) if (w.re.test(err)) w.resolve(); else waiters.push(w);
    });
    const done = new Promise<Run>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, out, err })));
    const waitFor = (re: RegExp): Promise<void> => new Promise((resolve) => { if (re.test(err)) resolve(); else waiters.push({ re, resolve }); });
    return { child, err: () => err, waitFor, done };
  }

  const workerPid = (err: string): number => Number(/worker ready (\d+)/.exec(err)![1]);
  const gone = (pid: number): boolean => { try { process.kill(pid, 0); return false; } catch { return true; } };

  it.skipIf(!linux)('SIGINT to the supervisor reaches the worker; exit 130 with a line, the worker gone', async () => {
    const s = started('hang');
    await s.waitFor(/worker ready \d+\n/);
    s.child.kill('SIGINT');
    const r = await s.done;
    expect([r.code, r.signal]).toEqual([130, null]);
    expect(r.err).toMatch(/\nonnx-lr: interrupted \(SIGINT\)\n$/);
    expect(gone(workerPid(r.err))).toBe(true);
  });

  it.skipIf(!linux)('a worker that does not stop on SIGTERM is killed at the second; exit 143', async () => {
    const s = started('hang-deaf');
    await s.waitFor(/worker ready \d+\n/);
    s.child.kill('SIGTERM');
    await s.waitFor(/worker got SIGTERM\n/);
    s.child.kill('SIGTERM');
    const r = await s.done;
    expect([r.code, r.signal]).toEqual([143, null]);
    expect(r.err).toMatch(/\nonnx-lr: interrupted \(SIGTERM\)\n$/);
    expect(gone(workerPid(r.err))).toBe(true);
  });

  it.skipIf(!linux)('a worker whose supervisor is SIGKILLed stops too', async () => {
    const s = started('hang');
    await s.waitFor(/worker ready \d+\n/);
    const pid = workerPid(s.err());
    s.child.kill('SIGKILL');
    await s.done;
    // The worker notices the closed channel and ends; it is not our child, so poll (generously).
    for (let i = 0; i < 300 && !gone(pid); i++) await new Promise((r) => setTimeout(r, 100));
    expect(gone(pid)).toBe(true);
  });
});

describe('describeEnd', () => {
  const base = { code: null, signal: null, nativeOutput: '', argv: ['optimize', 'in.onnx', 'out.onnx'] };
  it('maps each way a worker ends to an exit code and a message', () => {
    expect(describeEnd({ ...base, code: 1 })).toEqual({ code: 1 });
    expect(describeEnd({ ...base, code: 0, received: 'SIGINT' })).toEqual({ code: 0 });
    expect(describeEnd({ ...base, signal: 'SIGINT', received: 'SIGINT' })).toEqual({ code: 130, message: 'interrupted (SIGINT)' });
    expect(describeEnd({ ...base, signal: 'SIGKILL', received: 'SIGTERM' }).code).toBe(143);
    expect(describeEnd({ ...base, signal: 'SIGINT' })).toEqual({ code: 130, message: 'interrupted (SIGINT)' });
    expect(describeEnd({ ...base, signal: 'SIGSEGV' }).message).toMatch(/^ONNX Runtime crashed \(SIGSEGV\) while processing in\.onnx/);
    expect(describeEnd({ ...base, signal: 'SIGABRT', nativeOutput: 'FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory' }).message)
      .toMatch(/^ran out of JavaScript heap memory while processing in\.onnx/);
    expect(describeEnd({ ...base, signal: 'SIGKILL', overLimit: { rss: 3 * 2 ** 30, limit: 2 ** 31 } }).message).toMatch(/passed the 2 GiB limit/);
    // Killed for memory just as it finished: its own exit code stands.
    expect(describeEnd({ ...base, code: 0, overLimit: { rss: 3 * 2 ** 30, limit: 2 ** 31 } })).toEqual({ code: 0 });
    expect(describeEnd({ ...base, signal: 'SIGXCPU', argv: ['inspect', '--json', 'm.onnx'] })).toEqual({ code: 2, message: "the worker died of SIGXCPU while processing 'inspect'" });
  });
});
