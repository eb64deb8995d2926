/**
 * A synchronous GEMM backed by onnxruntime-node, for the numerics that run inside the
 * synchronous passes (Tucker-2's HOOI, CP-ALS, SVDs, refits): ORT's run() is async, so
 * the products run in a worker thread and the caller blocks on Atomics.wait until the
 * worker has answered on a MessageChannel (read with receiveMessageOnPort).
 *
 * Why: a 512×1024×3×3 Tucker-2 at rank (436, 218) spends 92% of its 130 s in the JS
 * kernel (~3.4 GFLOP/s here); ORT's fp64 Gemm runs ~18 GFLOP/s on 2 threads and its fp32
 * one ~2× that. Precision follows the operands as in ort-gemm.ts: fp32 only when both are
 * Float32Array, so fp64 numerics keep their results (to ~1e-14).
 *
 * Operands and results pass through a SharedArrayBuffer kept between products (ORT
 * refuses tensors on shared memory, so the worker copies into private buffers it also
 * keeps). Sent by structured clone instead, each D×D fp64 operand landed in fresh memory
 * whose first touch cost more than the product: 4608×4608×128 took 1.4 s against ORT's
 * 0.06 s (AMD EPYC, 2 cores). The price: both stay at the largest product's size until
 * dispose() (ISNet's 512-channel 3x3 convs: W·Xᵀ with X 4608² fp64, ~400 MB in all).
 *
 * The worker is plain JavaScript evaluated from a string (it must run without the
 * TypeScript toolchain) and loads onnxruntime-node from the path this module resolves.
 */
import { createRequire } from 'node:module';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { LrError } from '../errors.js';
import type { GemmOptions, SyncGemm } from './engine.js';
import { gemm, gemmShape } from './gemm.js';
import { encodeGemmModel, gemmSessionOptions, ONNX_DOUBLE, ONNX_FLOAT } from './gemm-model.js';
import type { Matrix } from './matrix.js';

export interface SyncOrtGemmOptions {
  /** ORT intra-op threads (default 2, this machine's cores). */
  threads?: number;
  /** Products with fewer flops (2mnk) than this run in JS (default 2e7: a round trip costs ~0.2 ms). */
  minFlops?: number;
  /** Longest wait for one product before giving up (default 10 minutes). */
  timeoutMs?: number;
}

export interface SyncOrtGemm extends SyncGemm {
  /** Products ORT failed or did not answer in time, computed in JS instead (same result, slower). */
  readonly fallbacks: number;
  /** Closes the worker once its product in hand is done (its ORT sessions released first); the engine must not be used afterwards. */
  dispose(): Promise<void>;
}

/** How long dispose() waits for the worker to finish its product and exit before stopping it. */
const DISPOSE_GRACE_MS = 60_000;

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ortPath);
const { port, flag, sessionOptions } = workerData;
const state = new Int32Array(flag);
const sessions = new Map();
// ORT refuses tensors on shared memory: operands are copied from the stage into these
// private buffers, kept between products so their pages are touched once.
const own = { A: new ArrayBuffer(0), B: new ArrayBuffer(0) };
function operand(name, Type, stage, off, len) {
  if (own[name].byteLength < len * Type.BYTES_PER_ELEMENT) own[name] = new ArrayBuffer(len * Type.BYTES_PER_ELEMENT);
  const x = new Type(own[name], 0, len);
  x.set(new Type(stage, off * Type.BYTES_PER_ELEMENT, len));
  return x;
}
async function product(m) {
  try {
    let s = sessions.get(m.key);
    if (!s) {
      s = await ort.InferenceSession.create(m.model, sessionOptions);
      sessions.set(m.key, s);
    }
    const Type = m.f32 ? Float32Array : Float64Array;
    const type = m.f32 ? 'float32' : 'float64';
    const a = operand('A', Type, m.stage, m.aOff, m.aLen);
    const b = operand('B', Type, m.stage, m.bOff, m.bLen);
    const out = await s.run({ A: new ort.Tensor(type, a, m.aDims), B: new ort.Tensor(type, b, m.bDims) });
    new Type(m.stage, m.yOff * Type.BYTES_PER_ELEMENT, m.yLen).set(out.Y.data);
    port.postMessage({ seq: m.seq });
  } catch (e) {
    port.postMessage({ seq: m.seq, error: String((e && e.message) || e) });
  }
  Atomics.store(state, 0, 1);
  Atomics.notify(state, 0);
}
async function close() {
  for (const s of sessions.values()) await s.release().catch(() => {});
  sessions.clear();
  port.close();
  parentPort.close();
}
// One message at a time, in order: a close waits for the product before it.
let queue = Promise.resolve();
parentPort.on('message', (m) => { queue = queue.then(() => (m.close ? close() : product(m))); });
parentPort.postMessage('ready');
`;

/** The parent's Node flags minus --input-type, which would make the CommonJS worker source an ES module. */
function workerExecArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--input-type') i++;
    else if (!argv[i]!.startsWith('--input-type=')) out.push(argv[i]!);
  }
  return out;
}

export async function createSyncOrtGemm(options: SyncOrtGemmOptions = {}): Promise<SyncOrtGemm> {
  const threads = options.threads ?? 2;
  const minFlops = options.minFlops ?? 2e7;
  const timeoutMs = options.timeoutMs ?? 600_000;
  const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
  const { port1, port2 } = new MessageChannel();
  const flag = new SharedArrayBuffer(4);
  const state = new Int32Array(flag);
  const worker = new Worker(WORKER, { eval: true, execArgv: workerExecArgv(process.execArgv), workerData: { ortPath, port: port2, flag, sessionOptions: gemmSessionOptions(threads) }, transferList: [port2 as MessagePort] });
  worker.unref();
  try {
    await new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`exited with code ${code}`)));
    });
  } catch (e) {
    await worker.terminate();
    throw new LrError('numeric', `the ORT GEMM worker did not start: ${(e as Error).message}`);
  }
  worker.removeAllListeners();
  // Terminating a worker while it is inside an ORT call aborts the whole process (ORT's
  // binding throws from a callback that cannot reach JS any more): the worker is only ever
  // asked to close, which it does after the product in hand, and then exits by itself.
  let exited = false;
  const exit = new Promise<void>((resolve) => worker.once('exit', () => { exited = true; resolve(); }));
  worker.on('error', () => {}); // an exit follows; the products it owed run in JS
  // Set on a timeout (or by dispose): every later product runs in JS, as after the worker's exit.
  let closing = false;
  const close = () => { if (!closing && !exited) worker.postMessage({ close: true }); closing = true; };
  const made = new Set<string>();
  let disposed = false;
  let fallbacks = 0;
  let seq = 0;
  let stage = new SharedArrayBuffer(0);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  /** The worker's answer to product `want`: it posts before raising the flag; stale answers are dropped. */
  const answer = (want: number): { error?: string } | undefined => {
    for (let tries = 0; tries < 10_000; tries++) {
      const got = receiveMessageOnPort(port1)?.message as { seq: number; error?: string } | undefined;
      if (got?.seq === want) return got;
      if (!got) Atomics.wait(pause, 0, 0, 1);
    }
    return undefined;
  };

  return {
    name: `ort-sync(${threads} threads)`,
    matmulSync(a: Matrix, b: Matrix, opts: GemmOptions = {}): Matrix {
      if (disposed) throw new LrError('numeric', 'ORT sync GEMM used after dispose()');
      const [m, k, n] = gemmShape(a, b, opts);
      for (const [x, what] of [[a, 'A'], [b, 'B']] as const) {
        if (x.data.length !== x.rows * x.cols) throw new LrError('numeric', `matmulSync: ${what} holds ${x.data.length} values for ${x.rows}×${x.cols}`);
      }
      if (closing || exited || 2 * m * n * k < minFlops || m === 0 || n === 0 || k === 0) return gemm(a, b, opts);
      const f32 = a.data instanceof Float32Array && b.data instanceof Float32Array;
      const key = `${f32 ? 'f' : 'd'}${opts.transA ? 1 : 0}${opts.transB ? 1 : 0}`;
      const model = made.has(key) ? undefined : encodeGemmModel({ elemType: f32 ? ONNX_FLOAT : ONNX_DOUBLE, transA: !!opts.transA, transB: !!opts.transB });
      // Operands and result pass through one shared stage (element offsets), reused from
      // product to product: a fresh buffer's first touch costs more than the copy here.
      const aLen = a.rows * a.cols;
      const bLen = b.rows * b.cols;
      const yLen = m * n;
      const bytes = (aLen + bLen + yLen) * (f32 ? 4 : 8);
      if (stage.byteLength < bytes) stage = new SharedArrayBuffer(8 * Math.ceil(Math.max(bytes, stage.byteLength * 1.25) / 8));
      const view = f32 ? new Float32Array(stage, 0, aLen + bLen + yLen) : new Float64Array(stage, 0, aLen + bLen + yLen);
      view.set(a.data, 0);
      view.set(b.data, aLen);
      Atomics.store(state, 0, 0);
      const id = ++seq;
      worker.postMessage({ seq: id, key, model, f32, stage, aOff: 0, aLen, bOff: aLen, bLen, yOff: aLen + bLen, yLen, aDims: [a.rows, a.cols], bDims: [b.rows, b.cols] });
      if (Atomics.wait(state, 0, 0, timeoutMs) === 'timed-out') {
        close();
        fallbacks++;
        return gemm(a, b, opts);
      }
      const reply = answer(id);
      if (!reply || reply.error !== undefined) {
        fallbacks++;
        return gemm(a, b, opts);
      }
      made.add(key);
      return { rows: m, cols: n, data: view.slice(aLen + bLen, aLen + bLen + yLen) };
    },
    get fallbacks() { return fallbacks; },
    async dispose() {
      if (disposed) return;
      disposed = true;
      stage = new SharedArrayBuffer(0); // the worker's copies go with it
      close();
      worker.ref(); // the wait for its exit keeps the process alive
      // A worker that never finishes its product (a hung ORT) is stopped after all, late.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), DISPOSE_GRACE_MS); timer.unref(); });
      if (await Promise.race([exit, late]) === 'late') await worker.terminate();
      clearTimeout(timer);
      port1.close();
    },
  };
}
