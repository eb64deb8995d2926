/**
 * The page's worker: the compression runs here, off the page's thread, with the library's
 * own code (src/browser/optimize-bytes.ts) and ONNX Runtime Web served with the page.
 */
import wasmUrl from 'onnxruntime-web/ort-wasm-simd-threaded.wasm?url';
import { METHOD_CHOICES } from '../passes/dispatch.js';
import { MAX_PAGE_MODEL_BYTES, optimizeBytes, type PageSettings } from '../src/browser/optimize-bytes.js';
import { isOrtThread, useLocalWasm } from '../src/browser/ort-web.js';
import { pageErrorMessage } from '../src/browser/page-errors.js';
import { renderHtmlReport } from '../src/report/html-report.js';
import { renderReport } from '../src/report/report.js';
import { parseShapeArgs } from '../src/verify/inputs.js';
import type { MethodChoice } from '../src/optimize/driver.js';
import { createWebSyncGemm, type WebSyncGemm } from './gemm-engine.js';
import type { InitRequest, RunRequest, WorkerMessage } from './protocol.js';

const post = (m: WorkerMessage, transfer: Transferable[] = []): void => self.postMessage(m, { transfer });

/** The ORT Web GEMM engine, started once for every run; or why it is not there. */
let engine: Promise<WebSyncGemm | string> | undefined;

/** The form's goal as the settings the CLI's flags give. */
function goalSetting(goal: RunRequest['goal'], value: number): Pick<PageSettings, 'energy' | 'rankRatio' | 'rank' | 'maxError'> {
  switch (goal) {
    case 'maxError': return { maxError: value };
    case 'maxCosine': return { maxError: `cosine:${value}` };
    case 'maxTop1': return { maxError: `top1:${value}` };
    default: return { [goal]: value };
  }
}

async function run(req: RunRequest): Promise<void> {
  const t0 = performance.now();
  engine ??= createWebSyncGemm(threads).catch((e: unknown) => (e instanceof Error ? e.message : String(e)));
  const gemm = await engine;
  const shapeArgs = req.shapes.split(/[\s,]+/).filter((s) => s !== '');
  const shapes = parseShapeArgs(shapeArgs);
  if (!shapes.ok) throw shapes.error;
  const settings: PageSettings = {
    method: req.method as MethodChoice, ...goalSetting(req.goal, req.value), seed: req.seed, shapes: shapes.value, latency: req.latency,
    ...(!req.dataAware && { dataAware: false }),
  };
  const input = new Uint8Array(req.bytes);
  const c = req.calib;
  const r = await optimizeBytes(input, req.name, settings, {
    onStage: (stage) => post({ type: 'stage', stage }),
    onProgress: (done, total, layer) => post({ type: 'progress', done, total, layer }),
    ...(typeof gemm === 'string' ? { noGemm: gemm } : { gemm }),
    threads,
    ...(c && {
      calibration: {
        label: c.label, images: c.images.map((f) => ({ name: f.name, bytes: new Uint8Array(f.bytes) })), samples: c.samples,
        ...(c.mean.length > 0 && { mean: c.mean }), ...(c.std.length > 0 && { std: c.std }),
      },
    }),
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
  const text = renderReport(r.report);
  post({ type: 'done', bytes, report: r.report, text, html, pass: r.pass, seconds: (performance.now() - t0) / 1000 }, [bytes]);
}

/** ORT Web's threads here (set once, before the first session); the GEMM worker runs as many. */
let threads = 1;

// ORT's own thread workers load this script again (it holds ORT): they are left to ORT.
// The page's first message sets ORT's threads (before any session); the others are runs.
if (!isOrtThread()) {
  self.onmessage = (e: MessageEvent<InitRequest>) => {
    threads = useLocalWasm(wasmUrl, e.data.threads);
    self.onmessage = (r: MessageEvent<RunRequest>) => {
      run(r.data).catch((err: unknown) => post({ type: 'error', message: pageErrorMessage(err, r.data.name) }));
    };
    post({ type: 'ready', methods: METHOD_CHOICES, maxBytes: MAX_PAGE_MODEL_BYTES, threads });
  };
}
