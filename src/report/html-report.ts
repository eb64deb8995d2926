/**
 * The HTML report from a Report and the original model: `renderHtmlReport` (the library's
 * call, and what `optimize --html` uses) reads the original weights for the spectra
 * (spectra.ts) and renders the page (html.ts); `writeHtmlReport` writes it atomically.
 */
import { LrError } from '../errors.js';
import { Model } from '../graph/graph.js';
import { decodeModel } from '../onnx/codec.js';
import { loadModel } from '../onnx/file.js';
import { writeFileAtomic } from '../util/temp-files.js';
import { renderHtml } from './html.js';
import type { Report } from './report.js';
import { layerSpectra, MAX_SPECTRUM_WORK, type LayerSpectra } from './spectra.js';

export interface HtmlReportOptions {
  /**
   * The ORIGINAL model (the one `optimize` was given), as a path or bytes: each rewritten
   * layer's singular-value spectra are computed from its weights. Without it the page has
   * everything else and says why the spectra are missing.
   */
  model?: string | Uint8Array;
  /** What the page says in place of the spectra when `model` is absent. */
  spectraNote?: string;
  /** Leave out a spectrum whose matrix needs more than this many flops (m·n·min(m, n)); default 4e9. */
  maxSpectrumWork?: number;
}

/**
 * The report as one self-contained HTML page (no script, no network): before/after table,
 * per-layer spectra with the chosen ranks, error-vs-rank curves and per-layer latency when
 * the run measured them, the budget's allocation and the verification per output.
 *
 *   const { report } = await optimize('model.onnx', { output: 'model.lr.onnx' });
 *   fs.writeFileSync('report.html', await renderHtmlReport(report, { model: 'model.onnx' }));
 */
export async function renderHtmlReport(report: Report, opts: HtmlReportOptions = {}): Promise<string> {
  if (opts.model === undefined) {
    return renderHtml(report, { spectraNote: opts.spectraNote ?? 'not computed: pass the original model (renderHtmlReport(report, { model }))' });
  }
  const model = opts.model;
  if (typeof model !== 'string' && !(model instanceof Uint8Array)) {
    throw new LrError('usage', `renderHtmlReport: model must be a file path or the model's bytes (a Uint8Array), got ${model === null ? 'null' : typeof model}`);
  }
  const maxWork = opts.maxSpectrumWork ?? MAX_SPECTRUM_WORK;
  let spectra: LayerSpectra[] | undefined;
  let spectraNote: string | undefined;
  try {
    if (typeof model === 'string') {
      const loaded = loadModel(model);
      try {
        spectra = layerSpectra(new Model(loaded.model), report.layers, { external: loaded.external, maxWork });
      } finally {
        loaded.external.close();
      }
    } else {
      // Bytes carry no external data (a model with external data is given by its path).
      spectra = layerSpectra(new Model(decodeModel(model)), report.layers, { maxWork });
    }
  } catch (e) {
    // The page is still worth having without the spectra.
    spectraNote = `not computed: ${e instanceof Error ? e.message : String(e)}`;
  }
  return renderHtml(report, { spectra, spectraNote });
}

/** Writes the page atomically (a temp file renamed over `file`); errors name `label` (e.g. --html). */
export function writeHtmlReport(file: string, html: string, label = '--html'): void {
  try {
    writeFileAtomic(file, [new TextEncoder().encode(html)]);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new LrError('io', why.includes(file) ? `${label}: ${why}` : `cannot write ${label} ${file}: ${why}`);
  }
}
