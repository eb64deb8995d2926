/**
 * GemmEngine backed by onnxruntime-node: one tiny Gemm model per (dtype, transA,
 * transB), each session created on first use and cached inside the engine object
 * (no module-level state, so engines with different thread counts can coexist).
 * Products below `minFlops` stay in JS, where session overhead would dominate.
 *
 * Speed notes (2-core machine, 1024³ fp32): the product itself runs at MLAS speed;
 * what cost us was around it.
 * - Thread-pool spinning: every session owns an intra-op pool whose idle workers spin
 *   after a run. An algorithm that alternates sessions (A·X, then Aᵀ·Y, then a Gram)
 *   leaves one pool spinning while the next one computes, halving throughput or worse
 *   on 2 cores. Spinning is off by default; workers sleep between runs.
 * - Not worth doing: preallocating the output (onnxruntime-node copies it into a new
 *   JS array anyway, so it only adds an allocation).
 * - Inputs are wrapped, never copied, when their dtype already matches (ORT reads the
 *   JS buffer directly); only a dtype change costs a conversion.
 */
import * as ort from 'onnxruntime-node';
import { LrError } from '../errors.js';
import type { GemmEngine, GemmOptions } from './engine.js';
import { gemm, gemmShape } from './gemm.js';
import { encodeGemmModel, gemmSessionOptions, ONNX_DOUBLE, ONNX_FLOAT } from './gemm-model.js';
import type { Matrix } from './matrix.js';

export interface OrtGemmEngineOptions {
  /** ORT intra-op threads (default 2, this machine's cores). */
  threads?: number;
  /** Products with fewer flops (2mnk) than this run in JS (default 4e6). */
  minFlops?: number;
  /**
   * 'auto' (default): fp32 when both operands are Float32Array, else fp64.
   * 'fp32': always fp32 (fp64 operands are rounded; result is Float32).
   */
  precision?: 'auto' | 'fp32';
  /**
   * Let idle intra-op threads spin between runs (default false). Spinning saves a
   * wake-up per run for one session used back to back, but with several sessions the
   * spinning pools compete with the working one for the cores.
   */
  spinning?: boolean;
}

export function createOrtGemmEngine(options: OrtGemmEngineOptions = {}): GemmEngine {
  const threads = options.threads ?? 2;
  const minFlops = options.minFlops ?? 4e6;
  const precision = options.precision ?? 'auto';
  const sessions = new Map<string, Promise<ort.InferenceSession>>();
  let disposed = false;

  const session = (f32: boolean, transA: boolean, transB: boolean): Promise<ort.InferenceSession> => {
    const key = `${f32 ? 'f' : 'd'}${transA ? 1 : 0}${transB ? 1 : 0}`;
    let s = sessions.get(key);
    if (!s) {
      const bytes = encodeGemmModel({ elemType: f32 ? ONNX_FLOAT : ONNX_DOUBLE, transA, transB });
      s = ort.InferenceSession.create(bytes, gemmSessionOptions(threads, options.spinning));
      sessions.set(key, s);
    }
    return s;
  };

  return {
    name: `ort(${threads} threads)`,
    async matmul(a: Matrix, b: Matrix, opts: GemmOptions = {}): Promise<Matrix> {
      if (disposed) throw new LrError('numeric', 'ORT gemm engine used after dispose()');
      const [m, k, n] = gemmShape(a, b, opts);
      if (2 * m * n * k < minFlops || m === 0 || n === 0 || k === 0) return gemm(a, b, opts);
      const f32 = precision === 'fp32' || (a.data instanceof Float32Array && b.data instanceof Float32Array);
      const s = await session(f32, !!opts.transA, !!opts.transB);
      const type = f32 ? 'float32' : 'float64';
      const cast = (x: Matrix) => (f32 ? toF32(x.data) : toF64(x.data));
      const feeds = {
        A: new ort.Tensor(type, cast(a), [a.rows, a.cols]),
        B: new ort.Tensor(type, cast(b), [b.rows, b.cols]),
      };
      const out = await s.run(feeds);
      const y = out['Y'];
      if (!y) throw new LrError('numeric', 'ORT gemm returned no output');
      return { rows: m, cols: n, data: y.data as Float32Array | Float64Array };
    },
    async dispose() {
      disposed = true;
      const all = [...sessions.values()];
      sessions.clear();
      for (const s of all) await (await s).release();
    },
  };
}

function toF32(d: Float32Array | Float64Array): Float32Array {
  return d instanceof Float32Array ? d : Float32Array.from(d);
}

function toF64(d: Float32Array | Float64Array): Float64Array {
  return d instanceof Float64Array ? d : Float64Array.from(d);
}
