/**
 * ONNX Runtime Web as the page uses it: the wasm binary served with the page (never a
 * CDN), with threads when the page is cross-origin isolated (SharedArrayBuffer is there
 * only then), else one.
 */
import * as ort from 'onnxruntime-web';

/** What is read of the worker's global scope (the library is type-checked without the DOM's types). */
const scope = globalThis as unknown as { crossOriginIsolated?: boolean; navigator?: { hardwareConcurrency?: number }; name?: unknown };

/**
 * Threads ORT Web runs with in this context: one without isolation (no SharedArrayBuffer);
 * else `requested` (the page's ?threads=N), or ORT's own default, half the cores up to 4
 * (the page's worker and the GEMM worker need a core too; measured on a loaded 2-core
 * machine, 2 wasm threads ran rec 1.5-3x slower than one).
 */
export function pageThreads(requested?: number): number {
  if (scope.crossOriginIsolated !== true) return 1;
  if (requested !== undefined && Number.isInteger(requested) && requested >= 1) return Math.min(requested, 16);
  return Math.max(1, Math.min(4, Math.ceil((scope.navigator?.hardwareConcurrency ?? 1) / 2)));
}

/**
 * True in the workers ORT starts for its threads: they load the script that started ORT
 * (the page's worker) again, where it must leave the worker to ORT.
 */
export function isOrtThread(): boolean {
  return typeof scope.name === 'string' && scope.name.startsWith('em-pthread');
}

/** Points ORT Web at the page's wasm and sets its threads (before the first session); returns them. */
export function useLocalWasm(wasmUrl: string, requested?: number): number {
  const threads = pageThreads(requested);
  ort.env.wasm.wasmPaths = { wasm: wasmUrl };
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = 'error';
  return threads;
}
