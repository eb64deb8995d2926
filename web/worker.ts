/**
 * The page's worker: the compression runs here, off the page's thread, with the library's
 * own code (src/browser/optimize-bytes.ts) and ONNX Runtime Web served with the page.
 */
import wasmUrl from 'onnxruntime-web/ort-wasm-simd-threaded.wasm?url';
import { METHOD_CHOICES } from '../passes/index.js';
import { MAX_PAGE_MODEL_BYTES, optimizeBytes, type PageSettings } from '../src/browser/optimize-bytes.js';
import { useLocalWasm } from '../src/browser/ort-web.js';
import { renderHtmlReport } from '../src/report/html-report.js';
import { renderReport } from '../src/report/report.js';
import { parseShapeArgs } from '../src/verify/inputs.js';
import type { MethodChoice } from '../src/optimize/driver.js';
import { createWebSyncGemm, type WebSyncGemm } from './gemm-engine.js';
import type { RunRequest, WorkerMessage } from './protocol.js';

useLocalWasm(wasmUrl);
const post = (m: WorkerMessage, transfer: Transferable[] = []): void => self.postMessage(m, { transfer });

/** The ORT Web GEMM engine, started once for every run; or why it is not there. */
let engine: Promise<WebSyncGemm | string> | undefined;

async function run(req: RunRequest): Promise<void> {
  const t0 = performance.now();
  engine ??= createWebSyncGemm().catch((e: unknown) => (e instanceof Error ? e.message : String(e)));
  const gemm = await engine;
  const shapeArgs = req.shapes.split(/[\s,]+/).filter((s) => s !== '');
  const shapes = parseShapeArgs(shapeArgs);
  if (!shapes.ok) throw shapes.error;
  const settings: PageSettings = {
    method: req.method as MethodChoice, [req.goal]: req.value, seed: req.seed, shapes: shapes.value, latency: req.latency,
  };
  const input = new Uint8Array(req.bytes);
  const r = await optimizeBytes(input, req.name, settings, {
    onStage: (stage) => post({ type: 'stage', stage }),
    onProgress: (done, total, layer) => post({ type: 'progress', done, total, layer }),
    ...(typeof gemm === 'string' ? { noGemm: gemm } : { gemm }),
  });
  // The page `optimize --html` writes, with the spectra from the original's weights.
  post({ type: 'stage', stage: 'rendering the HTML report' });
  let html: string;
  try {
    html = await renderHtmlReport(r.report, { model: input });
  } catch (e) {
    // The model and the other views of the report are still worth having.
    html = `<!DOCTYPE html><p>The HTML report could not be rendered: ${String(e instanceof Error ? e.message : e).replace(/[<&]/g, (c) => (c === '<' ? '&lt;' : '&amp;'))}</p>`;
  }
  const bytes = r.bytes.buffer as ArrayBuffer;
  // renderReport names ORT-node for every verification (the report does not say which
  // runtime verified): here it was ORT Web.
  const text = renderReport(r.report).replace(/^verification \(ORT-node,/m, 'verification (ORT-web wasm,');
  post({ type: 'done', bytes, report: r.report, text, html, pass: r.pass, seconds: (performance.now() - t0) / 1000 }, [bytes]);
}

self.onmessage = (e: MessageEvent<RunRequest>) => {
  run(e.data).catch((err: unknown) => post({ type: 'error', message: err instanceof Error ? err.message : String(err) }));
};
post({ type: 'ready', methods: METHOD_CHOICES, maxBytes: MAX_PAGE_MODEL_BYTES });
