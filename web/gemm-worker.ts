/**
 * The factorizations' GEMM engine (gemm-engine.ts): products run here in ONNX Runtime Web
 * while the page's worker waits on Atomics.wait. Operands come in, and the product goes
 * back, through a SharedArrayBuffer; ctl[1] says 1 (done) or 2 (failed), then ctl[0] takes
 * the product's number and the waiting worker is woken.
 */
import wasmUrl from 'onnxruntime-web/ort-wasm-simd-threaded.wasm?url';
import * as ort from 'onnxruntime-web';
import { isOrtThread, useLocalWasm } from '../src/browser/ort-web.js';
import { sharedView, type GemmRequest } from './gemm-engine.js';

const sessions = new Map<string, ort.InferenceSession>();

async function product(e: MessageEvent<GemmRequest>): Promise<void> {
  const m = e.data;
  const ctl = new Int32Array(m.control);
  try {
    let s = sessions.get(m.key);
    if (!s) {
      if (!m.model) throw new Error(`no model for ${m.key}`);
      s = await ort.InferenceSession.create(m.model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
      sessions.set(m.key, s);
    }
    const n = (d: readonly number[]): number => d[0]! * d[1]!;
    const [la, lb] = [n(m.aDims), n(m.bDims)];
    // ORT's tensors take their own (unshared) copies of the operands.
    const a = sharedView(m.f32, m.data, 0, la).slice();
    const b = sharedView(m.f32, m.data, la, lb).slice();
    const out = m.f32
      ? await s.run({ A: new ort.Tensor('float32', a as Float32Array, m.aDims), B: new ort.Tensor('float32', b as Float32Array, m.bDims) })
      : await s.run({ A: new ort.Tensor('float64', a as Float64Array, m.aDims), B: new ort.Tensor('float64', b as Float64Array, m.bDims) });
    const y = out.Y!.data as Float32Array | Float64Array;
    sharedView(m.f32, m.data, la + lb, y.length).set(y);
    Atomics.store(ctl, 1, 1);
  } catch {
    Atomics.store(ctl, 1, 2);
  }
  Atomics.store(ctl, 0, m.seq);
  Atomics.notify(ctl, 0);
}

// ORT's own thread workers load this script again: they are left to ORT. The first
// message sets the threads (before any session), the others are products.
if (!isOrtThread()) {
  self.onmessage = (e: MessageEvent<{ threads?: number }>) => {
    const threads = useLocalWasm(wasmUrl, e.data.threads);
    self.onmessage = product;
    self.postMessage({ threads });
  };
}
