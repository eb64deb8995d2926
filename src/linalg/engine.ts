/**
 * Where matrix products run. ONNX Runtime's session.run is async, while small
 * products and unit tests want plain synchronous code. Rather than writing every
 * algorithm twice, the heavy algorithms are generators that *yield* their products
 * (`const c = yield* mm(a, b)`); a driver answers each request either synchronously
 * with the JS kernel (`runSync`) or by awaiting a GemmEngine (`runAsync`). The maths
 * is written once and the two paths cannot drift apart.
 */
import { gemm, type GemmOptions } from './gemm.js';
import type { Matrix } from './matrix.js';

export type { GemmOptions } from './gemm.js';

export interface GemmEngine {
  readonly name: string;
  /**
   * op(A)·op(B). Precision follows the operands: both Float32Array → may compute and
   * return fp32; otherwise fp64. Callers choose precision by the dtype they pass.
   */
  matmul(a: Matrix, b: Matrix, opts?: GemmOptions): Promise<Matrix>;
  /** Releases native resources (sessions); the engine must not be used afterwards. */
  dispose(): Promise<void>;
}

export interface GemmRequest {
  a: Matrix;
  b: Matrix;
  opts: GemmOptions;
}

/** A computation that yields its matrix products and returns T. */
export type GemmProgram<T> = Generator<GemmRequest, T, Matrix>;

/** Requests op(a)·op(b) from whichever driver runs the program. */
export function* mm(a: Matrix, b: Matrix, opts: GemmOptions = {}): GemmProgram<Matrix> {
  return yield { a, b, opts };
}

/**
 * A GEMM the synchronous numerics can call (the passes are synchronous): e.g. ORT in a
 * worker thread (ort-gemm-sync.ts). Same contract as GemmEngine.matmul.
 */
export interface SyncGemm {
  readonly name: string;
  matmulSync(a: Matrix, b: Matrix, opts?: GemmOptions): Matrix;
}

/** op(a)·op(b) on `sync` when given, else with the JS kernel. */
export function product(a: Matrix, b: Matrix, opts: GemmOptions = {}, sync?: SyncGemm): Matrix {
  return sync ? sync.matmulSync(a, b, opts) : gemm(a, b, opts);
}

/** Runs a program synchronously: products on `sync` when given, else the JS kernel. */
export function runSync<T>(program: GemmProgram<T>, sync?: SyncGemm): T {
  let step = program.next();
  while (!step.done) {
    const { a, b, opts } = step.value;
    step = program.next(product(a, b, opts, sync));
  }
  return step.value;
}

/** Runs a program, sending every product to `engine`. */
export async function runAsync<T>(program: GemmProgram<T>, engine: GemmEngine): Promise<T> {
  let step = program.next();
  while (!step.done) {
    const { a, b, opts } = step.value;
    step = program.next(await engine.matmul(a, b, opts));
  }
  return step.value;
}

/** The pure-JS engine (exact fp64 accumulation, no native resources). */
export function createJsGemmEngine(): GemmEngine {
  return {
    name: 'js',
    matmul: async (a, b, opts) => gemm(a, b, opts),
    dispose: async () => {},
  };
}
