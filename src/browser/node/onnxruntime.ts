/**
 * onnxruntime-node in the browser build: the library's sessions (verify/session.ts) and
 * shape probe run in ONNX Runtime Web, whose API is the same. The page sets where its wasm
 * is served (src/browser/ort-web.ts) before the first session.
 */
export * from 'onnxruntime-web';
