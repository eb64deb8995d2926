/**
 * The page: reads the model the user picks or drops, sends it to the worker with the
 * settings, shows progress, then the report (the same Report object `onnx-lr optimize`
 * builds, as tables here and as the CLI's text below them) and offers the result for
 * download. Nothing is sent anywhere: the bytes go from the file to the worker and back.
 */
import { bytes as fmtBytes, human, ratio } from '../src/report/format.js';
import type { Report } from '../src/report/report.js';
import type { InitRequest, RunRequest, WorkerMessage } from './protocol.js';

const $ = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`the page has no #${id}`);
  return e as T;
};

const fileInput = $<HTMLInputElement>('file');
const drop = $<HTMLElement>('drop');
const runButton = $<HTMLButtonElement>('run');
const goal = $<HTMLSelectElement>('goal');
const value = $<HTMLInputElement>('value');
const GOAL_DEFAULTS: Record<string, string> = { energy: '0.999', rankRatio: '0.5', rank: '16', maxCosine: '0.99', maxTop1: '0.99', maxError: '0.1' };
const BUDGETS = new Set(['maxCosine', 'maxTop1', 'maxError']);

/** The chosen file: read at each run and handed to the worker (the page keeps no copy of its bytes). */
let model: File | undefined;
let maxBytes = Infinity;
let ready = false;
let busy = false;
let downloadUrl: string | undefined;
/** The calibration images chosen, and what the report calls them (the folder's name). */
let calib: { label: string; files: File[] } | undefined;

const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
// ?threads=N sets ORT Web's threads (cross-origin isolated pages only); without it, ORT's default.
const threadsParam = Number(new URLSearchParams(location.search).get('threads') ?? NaN);
worker.postMessage({ type: 'init', ...(Number.isInteger(threadsParam) && threadsParam >= 1 && { threads: threadsParam }) } satisfies InitRequest);

function showError(message: string): void {
  const e = $('error');
  e.textContent = message;
  e.hidden = message === '';
}

function refreshButton(): void {
  runButton.disabled = !ready || busy || model === undefined;
}

function choose(file: File): void {
  showError('');
  model = undefined;
  refreshButton();
  $('chosen').textContent = `${file.name} (${fmtBytes(file.size)})`;
  if (file.size > maxBytes) {
    // Exact counts when the rounded sizes read alike (a model a few bytes over the limit).
    const [size, max] = fmtBytes(file.size) === fmtBytes(maxBytes) ? [`${file.size} bytes`, `${maxBytes} bytes`] : [fmtBytes(file.size), fmtBytes(maxBytes)];
    showError(`${file.name} is ${size}: this page takes models up to ${max} (a browser tab cannot hold two copies of a larger model and its factorizations; use the command line, npx onnx-lr optimize)`);
  } else {
    model = file;
  }
  refreshButton();
}

fileInput.addEventListener('change', () => { const f = fileInput.files?.[0]; if (f && !busy) choose(f); });
// A file dropped anywhere on the page is taken (the browser would otherwise open it in place of the page).
window.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
window.addEventListener('dragleave', (e) => { if (e.relatedTarget === null) drop.classList.remove('over'); });
window.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const f = e.dataTransfer?.files[0];
  if (f && !busy) choose(f);
});
goal.addEventListener('change', () => { value.value = GOAL_DEFAULTS[goal.value] ?? ''; });

/** A folder's images as `--calib DIR` reads them: its own files, not those of its subfolders. */
function chooseCalib(list: FileList | null, fromFolder: boolean): void {
  const all = [...list ?? []];
  const files = fromFolder ? all.filter((f) => f.webkitRelativePath.split('/').length === 2) : all;
  const label = fromFolder && all[0] ? all[0].webkitRelativePath.split('/')[0]! : `${files.length} chosen image(s)`;
  calib = files.length > 0 ? { label, files } : undefined;
  $('calib-chosen').textContent = calib ? `${label}: ${files.length} file(s)` : 'No images chosen.';
}
$<HTMLInputElement>('calib-dir').addEventListener('change', (e) => chooseCalib((e.target as HTMLInputElement).files, true));
$<HTMLInputElement>('calib-files').addEventListener('change', (e) => chooseCalib((e.target as HTMLInputElement).files, false));

/** `--mean`/`--std` as typed: comma-separated numbers, or nothing for the default. */
function numberList(id: string, flag: string): number[] {
  const text = $<HTMLInputElement>(id).value.trim();
  if (text === '') return [];
  const v = text.split(',').map((x) => Number(x.trim()));
  if (v.some((x) => !Number.isFinite(x))) throw new Error(`${flag} expects comma-separated numbers (e.g. 0.485,0.456,0.406), got "${text}"`);
  return v;
}

$<HTMLFormElement>('form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (model && !busy) void start(model);
});

async function start(file: File): Promise<void> {
  const v = Number(value.value);
  const seed = Number($<HTMLInputElement>('seed').value);
  if (!(value.value.trim() !== '' && Number.isFinite(v))) { showError(`${goal.selectedOptions[0]?.textContent ?? 'value'}: enter a number`); return; }
  if (!(Number.isInteger(seed) && seed >= 0)) { showError('seed: enter a whole number ≥ 0'); return; }
  const budget = BUDGETS.has(goal.value);
  if (budget && !calib) { showError('an error budget needs calibration images: choose a folder of .png/.jpg images, or several images'); return; }
  let mean: number[], std: number[];
  try {
    mean = numberList('mean', 'mean (--mean)');
    std = numberList('std', 'std (--std)');
  } catch (err) { showError((err as Error).message); return; }
  const samplesText = $<HTMLInputElement>('calib-samples').value.trim();
  const samples = samplesText === '' ? undefined : Number(samplesText);
  if (samples !== undefined && !(Number.isInteger(samples) && samples >= 1)) { showError('samples (--calib-samples): enter a whole number ≥ 1'); return; }
  busy = true;
  showError('');
  $('result').hidden = true;
  $('status').hidden = false;
  $('stage').textContent = 'starting';
  $('layer').textContent = '';
  $<HTMLProgressElement>('progress').removeAttribute('value');
  document.body.dataset.state = 'running';
  refreshButton();
  const settings = {
    method: $<HTMLSelectElement>('method').value, goal: goal.value as RunRequest['goal'], value: v, seed,
    shapes: $<HTMLInputElement>('shapes').value, latency: $<HTMLInputElement>('latency').checked,
    dataAware: $<HTMLInputElement>('data-aware').checked,
  };
  let bytes: ArrayBuffer;
  let images: { name: string; bytes: ArrayBuffer }[] = [];
  try {
    bytes = await file.arrayBuffer();
    // Only a budget reads them; the worker keeps the CLI's choice of files (extensions, order, --calib-samples).
    if (budget && calib) images = await Promise.all(calib.files.map(async (f) => ({ name: f.name, bytes: await f.arrayBuffer() })));
  } catch (err) {
    busy = false;
    $('status').hidden = true;
    showError(`cannot read ${file.name}: ${err instanceof Error ? err.message : String(err)}`);
    document.body.dataset.state = 'error';
    refreshButton();
    return;
  }
  const req: RunRequest = {
    type: 'run', name: file.name, bytes, ...settings,
    ...(budget && calib && { calib: { label: calib.label, images, mean, std, samples } }),
  };
  worker.postMessage(req, [bytes, ...images.map((i) => i.bytes)]);
}

worker.onmessage = (e: MessageEvent<WorkerMessage>) => {
  const m = e.data;
  switch (m.type) {
    case 'ready': {
      const method = $<HTMLSelectElement>('method');
      method.replaceChildren(...m.methods.map((x) => new Option(x, x, x === 'auto', x === 'auto')));
      maxBytes = m.maxBytes;
      $('max-size').textContent = fmtBytes(maxBytes);
      $('threads').textContent = m.threads > 1
        ? `ONNX Runtime Web runs ${m.threads} wasm threads here (the page is cross-origin isolated).`
        : crossOriginIsolated ? 'ONNX Runtime Web runs one wasm thread here (?threads=N in the address for more).'
          : 'ONNX Runtime Web runs one wasm thread here (serve the page with COOP/COEP headers, as npm run web does, for more).';
      ready = true;
      document.body.dataset.state = 'ready';
      break;
    }
    case 'stage': $('stage').textContent = m.stage; break;
    case 'progress': {
      const p = $<HTMLProgressElement>('progress');
      p.max = Math.max(1, m.total);
      p.value = m.done;
      $('layer').textContent = m.total > 0 ? `${m.done}/${m.total} ${m.layer}` : '';
      break;
    }
    case 'done':
      busy = false;
      $('status').hidden = true;
      showResult(m.report, m.text, m.html, m.bytes, m.pass, m.seconds);
      document.body.dataset.state = 'done';
      break;
    case 'error':
      busy = false;
      $('status').hidden = true;
      showError(m.message);
      document.body.dataset.state = 'error';
      break;
  }
  refreshButton();
};
worker.onerror = (e) => { busy = false; showError(`the worker failed: ${e.message}`); document.body.dataset.state = 'error'; refreshButton(); };

function cells(tag: 'td' | 'th', values: readonly string[], left: readonly number[] = [0]): HTMLTableRowElement {
  const tr = document.createElement('tr');
  values.forEach((v, i) => {
    const c = document.createElement(tag);
    c.textContent = v;
    if (left.includes(i) && i > 0) c.className = 'l';
    tr.append(c);
  });
  return tr;
}

function fill(id: string, head: readonly string[], rows: readonly (readonly string[])[], left?: readonly number[]): void {
  $(id).replaceChildren(cells('th', head, left), ...rows.map((r) => cells('td', r, left)));
}

const ms = (x: number): string => `${x.toFixed(3)} ms`;
const sci = (x: number): string => x.toExponential(2);

function showHtmlReport(html: string, name: string): void {
  const frame = $<HTMLIFrameElement>('html-report');
  const link = $<HTMLAnchorElement>('download-html');
  // No scripts in the frame (the report has none); same origin only so its height can be read.
  const fit = (): void => { frame.style.height = `${(frame.contentDocument?.documentElement.scrollHeight ?? 600) + 20}px`; };
  frame.onload = fit;
  // A closed <details> lays nothing out: the frame's height is known once it opens.
  $('html-section').ontoggle = fit;
  frame.srcdoc = html;
  link.href = `data:text/html;charset=utf-8,${encodeURIComponent(html)}`;
  link.download = name.replace(/\.onnx$/i, '.report.html');
}

function showResult(r: Report, text: string, html: string, out: ArrayBuffer, pass: boolean, seconds: number): void {
  const outName = r.output.file;
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = URL.createObjectURL(new Blob([out], { type: 'application/octet-stream' }));
  const dl = $<HTMLAnchorElement>('download');
  dl.href = downloadUrl;
  dl.download = outName;
  dl.textContent = `Download ${outName} (${fmtBytes(out.byteLength)})`;
  const rep = $<HTMLAnchorElement>('download-report');
  rep.href = `data:application/json;charset=utf-8,${encodeURIComponent(JSON.stringify(r, null, 2))}`;
  rep.download = outName.replace(/\.onnx$/i, '.report.json');
  const v = $('verdict');
  v.textContent = r.verify ? (pass ? 'PASS' : 'FAIL') : '';
  v.className = pass ? 'pass' : 'fail';

  const i = r.input;
  const o = r.output;
  fill('summary', ['', 'before', 'after', 'ratio'], [
    ['nodes', String(i.nodeCount), String(o.nodeCount), ratio(o.nodeCount, i.nodeCount)],
    ['params', human(i.params), human(o.params), ratio(o.params, i.params)],
    ...(i.macs !== undefined ? [['MACs (decomposable layers)', human(i.macs), human(o.macs), ratio(o.macs, i.macs)]] : []),
    ['file size', fmtBytes(i.bytes), fmtBytes(o.bytes), ratio(o.bytes, i.bytes)],
    ...(r.latencyWeb ? [['latency p50, ORT Web (wasm)', ms(r.latencyWeb.originalMs.p50), ms(r.latencyWeb.optimizedMs.p50), ratio(r.latencyWeb.optimizedMs.p50, r.latencyWeb.originalMs.p50)]] : []),
  ]);
  const b = r.budget;
  $('budget-line').textContent = b
    ? `Budget ${r.policy}: ${b.met ? 'met' : 'NOT met'} (${b.unit}: ${b.achieved.toPrecision(4)} against ${b.target.toPrecision(4)}, after ${b.attempts} allocation(s)). Calibration: ${r.calibration ?? ''}.`
    : '';
  $('agreement-runtime').textContent = r.verify?.backend === 'ort-node' ? 'ONNX Runtime (node)' : 'ONNX Runtime Web, wasm';
  fill('agreement', ['output', 'max abs', 'mean abs', 'rel L2', 'cosine', 'top-1', 'result'], (r.verify?.outputs ?? []).map((x) => [
    x.name, sci(x.maxAbs), sci(x.meanAbs), sci(x.relL2), x.cosine.toFixed(6), x.top1 === undefined ? '' : x.top1.toFixed(3), x.pass ? 'ok' : x.reasons.join('; '),
  ]), [0, 6]);
  const lat = r.latencyWeb;
  $('latency-line').textContent = lat
    ? `Latency in ONNX Runtime Web (wasm, ${lat.threads} thread${lat.threads === 1 ? '' : 's'}): original ${ms(lat.originalMs.p50)} → optimized ${ms(lat.optimizedMs.p50)}, speed-up ${lat.speedup.toFixed(2)}x over ${lat.runs} runs each. Whole run ${seconds.toFixed(1)} s.`
    : `Latency not measured. Whole run ${seconds.toFixed(1)} s.`;
  const rewritten = r.layers.filter((l) => !l.skipped);
  fill('layers', ['layer', 'op', 'weight', 'method', 'ranks', 'params', 'weight err', 'note'], [
    ...rewritten.map((l) => [l.name, l.op, l.weightShape.join('x'), l.method ?? '', (l.ranks ?? []).join(','), `${human(l.paramsBefore)} → ${human(l.paramsAfter)}`, l.relError === undefined ? '' : sci(l.relError), l.note ?? '']),
    ...(rewritten.length < r.layers.length ? [[`${r.layers.length - rewritten.length} layer(s) left as they were (the JSON report has each reason)`, '', '', '', '', '', '', '']] : []),
  ], [0, 7]);
  $('notes').replaceChildren(...r.notes.map((n) => { const li = document.createElement('li'); li.textContent = n; return li; }));
  $('report-text').textContent = text;
  showHtmlReport(html, outName);
  $('result').hidden = false;
}
