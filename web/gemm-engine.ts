/**
 * A synchronous GEMM for the factorizations (the library's SyncGemm) backed by ONNX Runtime
 * Web in a second worker: the passes are synchronous, ORT's run() is not, so the page's
 * worker hands each large product over and blocks on Atomics.wait until it is done, as
 * src/linalg/ort-gemm-sync.ts does with onnxruntime-node in Node. Needs SharedArrayBuffer,
 * i.e. a cross-origin isolated page (COOP/COEP); without it the products stay in JS.
 *
 * Why: measured in wasm (1 thread), ORT Web's Gemm runs about 6 GFLOP/s in fp64 and
 * 17-19 in fp32 where the JS kernel runs about 2.7 (512³ and 1024³ products).
 */
import { LrError } from '../src/errors.js';
import type { SyncGemm } from '../src/linalg/engine.js';
import { gemm, gemmShape, type GemmOptions } from '../src/linalg/gemm.js';
import { encodeGemmModel, ONNX_DOUBLE, ONNX_FLOAT } from '../src/linalg/gemm-model.js';
import type { Matrix } from '../src/linalg/matrix.js';

export interface GemmRequest {
  seq: number;
  key: string;
  model?: Uint8Array;
  f32: boolean;
  aDims: [number, number];
  bDims: [number, number];
  /** A, then B, then room for the product, in the operands' element type. */
  data: SharedArrayBuffer;
  control: SharedArrayBuffer;
}

export interface WebSyncGemm extends SyncGemm {
  /** Products run in ORT Web. */
  readonly products: number;
  /** Products ORT Web failed or did not answer in time, computed in JS instead (same result, slower). */
  readonly fallbacks: number;
  dispose(): void;
}

/** Elements [at, at + length) of a shared buffer of float32 or float64 values. */
export function sharedView(f32: boolean, buf: SharedArrayBuffer, at: number, length: number): Float32Array | Float64Array {
  return f32 ? new Float32Array(buf, at * 4, length) : new Float64Array(buf, at * 8, length);
}

/** Products under this many flops (2mnk) stay in JS: the same threshold as the CLI's ORT-node engine. */
const MIN_FLOPS = 2e7;
const TIMEOUT_MS = 600_000;

/** `threads`: ORT Web's in the GEMM worker (the page's ?threads=N; default pageThreads()'s). */
export async function createWebSyncGemm(threads?: number): Promise<WebSyncGemm> {
  if (!globalThis.crossOriginIsolated) throw new LrError('unsupported', 'the page is not cross-origin isolated (no SharedArrayBuffer)');
  const worker = new Worker(new URL('./gemm-worker.ts', import.meta.url), { type: 'module' });
  let running = 1;
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no answer in 30 s')), 30_000);
      worker.onmessage = (e: MessageEvent<{ threads: number }>) => { clearTimeout(t); running = e.data.threads; resolve(); };
      worker.onerror = (e) => { clearTimeout(t); reject(new Error(e.message)); };
      worker.postMessage({ threads });
    });
  } catch (e) {
    worker.terminate();
    throw new LrError('numeric', `the ORT Web GEMM worker did not start: ${(e as Error).message}`);
  }
  const control = new SharedArrayBuffer(8);
  const ctl = new Int32Array(control);
  const made = new Set<string>();
  let seq = 0;
  let products = 0;
  let fallbacks = 0;
  let broken = false;
  return {
    name: `ort-web-sync(${running} thread${running === 1 ? '' : 's'})`,
    matmulSync(a: Matrix, b: Matrix, opts: GemmOptions = {}): Matrix {
      const [m, k, n] = gemmShape(a, b, opts);
      if (broken || 2 * m * n * k < MIN_FLOPS || m === 0 || n === 0 || k === 0) return gemm(a, b, opts);
      const f32 = a.data instanceof Float32Array && b.data instanceof Float32Array;
      const key = `${f32 ? 'f' : 'd'}${opts.transA ? 1 : 0}${opts.transB ? 1 : 0}`;
      const la = a.rows * a.cols;
      const lb = b.rows * b.cols;
      const data = new SharedArrayBuffer((la + lb + m * n) * (f32 ? 4 : 8));
      sharedView(f32, data, 0, la).set(a.data);
      sharedView(f32, data, la, lb).set(b.data);
      const id = ++seq;
      Atomics.store(ctl, 0, 0);
      Atomics.store(ctl, 1, 0);
      const req: GemmRequest = {
        seq: id, key, f32, aDims: [a.rows, a.cols], bDims: [b.rows, b.cols], data, control,
        ...(!made.has(key) && { model: encodeGemmModel({ elemType: f32 ? ONNX_FLOAT : ONNX_DOUBLE, transA: !!opts.transA, transB: !!opts.transB }) }),
      };
      worker.postMessage(req);
      if (Atomics.wait(ctl, 0, 0, TIMEOUT_MS) === 'timed-out' || Atomics.load(ctl, 0) !== id) {
        broken = true;
        worker.terminate();
        fallbacks++;
        return gemm(a, b, opts);
      }
      if (Atomics.load(ctl, 1) !== 1) { fallbacks++; return gemm(a, b, opts); }
      made.add(key);
      products++;
      return { rows: m, cols: n, data: sharedView(f32, data, la + lb, m * n).slice() };
    },
    get products() { return products; },
    get fallbacks() { return fallbacks; },
    dispose() { worker.terminate(); },
  };
}
