/**
 * ONNX Runtime Web as the page uses it: the wasm binary served with the page (never a
 * CDN), one thread (session.ts's web backend runs one, and numbers then do not depend on
 * whether the page is cross-origin isolated).
 */
import * as ort from 'onnxruntime-web';

export function useLocalWasm(wasmUrl: string): void {
  ort.env.wasm.wasmPaths = { wasm: wasmUrl };
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = 'error';
}
