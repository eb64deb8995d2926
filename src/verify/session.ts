/**
 * ORT sessions with fixed, comparable options. Both models of a comparison must run with
 * the same graphOptimizationLevel and thread settings, or differences in fusion and
 * scheduling get blamed on the rewrite.
 *
 * Note: onnxruntime-node's `run()` is synchronous inside (it blocks the event loop for
 * the duration of the inference) even though it returns a Promise.
 */
import { readFileSync, statSync } from 'node:fs';
import * as ortNode from 'onnxruntime-node';
import { err, ok, type Result } from '../errors.js';
import { decodeModel, encodeModel } from '../onnx/codec.js';
import { isElemType, type Feeds, type HostData, type HostTensor } from './tensor.js';
import { holdsBf16, widenBf16, WIDENED_NOTE } from './widen-bf16.js';

/** A model to load: a file path (required when the model has external data) or bytes. */
export type ModelSource = { path: string } | { bytes: Uint8Array };

export type Backend = 'node' | 'web';
export type OptLevel = 'disabled' | 'basic' | 'extended' | 'all';

export interface SessionOptions {
  /** 'node' = onnxruntime-node (native CPU); 'web' = onnxruntime-web wasm, single-threaded (in a page: the page's count). */
  backend?: Backend;
  /** Default 'all'. Use the same level for both models of a comparison. */
  graphOptimizationLevel?: OptLevel;
  /** Default 1 (node backend only; the web backend runs one wasm thread, or in a page the page's count). */
  intraOpNumThreads?: number;
  /**
   * false: idle intra-op threads sleep after a run instead of spinning (ORT's default), so
   * they do not steal the cores the JS work between runs (statistics, fits) needs. Timings
   * keep ORT's default, as deployments run.
   */
  spinning?: boolean;
  /** Names the model in error messages; defaults to the path or "<bytes>". */
  label?: string;
  /** Load the fp32 copy of a model holding bf16 straight away (its counterpart in a comparison ran as one). */
  widen?: boolean;
}

export interface ValueInfo {
  name: string;
  isTensor: boolean;
  /** ORT element type name ('float32', 'int64', …); '' for non-tensor values. */
  type: string;
  /** Numbers are fixed dims, strings symbolic ones; [] is a scalar (or, rarely, unknown rank). */
  shape: readonly (number | string)[];
}

export interface Session {
  readonly backend: Backend;
  readonly label: string;
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  /** Set when ORT refused the model as it is and runs its fp32 copy instead (a bf16 model, widen-bf16.ts): what to tell the user. */
  readonly widened?: string;
  /** Runs once; `fetches` defaults to every graph output. */
  run(feeds: Feeds, fetches?: readonly string[]): Promise<Result<Record<string, HostTensor>>>;
  /** Converts feeds to ORT tensors once and returns a closure that only runs (for timing). */
  prepare(feeds: Feeds): Result<() => Promise<void>>;
  release(): Promise<void>;
}

type Ort = typeof ortNode;

/** ORT cannot parse a protobuf over 2 GiB from memory; such models need external data and a path. */
const MAX_PROTO_BYTES = 2 ** 31 - 1;

let webOrt: Promise<Ort> | undefined;

/** onnxruntime-web is loaded lazily: its wasm start-up costs ~0.4 s and most runs never need it. */
function loadWeb(): Promise<Ort> {
  webOrt ??= import('onnxruntime-web').then((m) => {
    const ort = m as unknown as Ort;
    // Must be set before the first session; threaded wasm in Node is slower and needs workers.
    // A page that set its own count (src/browser/ort-web.ts, threads when cross-origin isolated) keeps it.
    if (!(ort.env.wasm.numThreads! > 0)) ort.env.wasm.numThreads = 1;
    ort.env.logLevel = 'error';
    return ort;
  });
  return webOrt;
}

export function describeSource(src: ModelSource): string {
  return 'path' in src ? src.path : `<${src.bytes.length} bytes>`;
}

/** ORT errors can span lines and carry ANSI colour codes; we report one clean line. */
export function firstLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/\u001b\[[0-9;]*m/g, '').trim();
  return clean.split('\n')[0]!.trim();
}

export async function createSession(src: ModelSource, opts: SessionOptions = {}): Promise<Result<Session>> {
  const backend = opts.backend ?? 'node';
  const label = opts.label ?? describeSource(src);
  if ('path' in src) {
    try {
      if (!statSync(src.path).isFile()) return err('io', `${label}: not a file`);
    } catch (e) {
      return err('io', `cannot read model ${label}: ${(e as NodeJS.ErrnoException).code ?? firstLine(e)}`);
    }
  } else if (src.bytes.length > MAX_PROTO_BYTES) {
    return err('io', `${label}: ${src.bytes.length} bytes exceeds ORT's 2 GiB protobuf limit; save it with external data and load it from a path`);
  }
  let ort: Ort = ortNode;
  if (backend === 'web') {
    try {
      ort = await loadWeb();
    } catch {
      webOrt = undefined;
      return err('unsupported', 'the web backend needs onnxruntime-web, an optional dependency that is not installed (npm install onnxruntime-web@1.30.0)');
    }
  }
  const options: ortNode.InferenceSession.SessionOptions = {
    graphOptimizationLevel: opts.graphOptimizationLevel ?? 'all',
    executionMode: 'sequential',
    interOpNumThreads: 1,
    logSeverityLevel: 4, // fatal only: ORT warns about unused initializers on stock models, and errors come back as exceptions anyway
    ...(backend === 'node' ? { intraOpNumThreads: opts.intraOpNumThreads ?? 1 } : { executionProviders: ['wasm'] }),
    ...(backend === 'node' && opts.spinning === false && { extra: { session: { intra_op: { allow_spinning: '0' } } } }),
  };
  if (opts.widen) {
    const wide = await widenedSession(ort, src, options);
    if (wide) return ok(wrap(ort, wide, backend, label, WIDENED_NOTE));
  }
  let s: ortNode.InferenceSession;
  try {
    s = 'path' in src
      ? await ort.InferenceSession.create(src.path, options)
      : await ort.InferenceSession.create(src.bytes, options);
  } catch (e) {
    // ORT's CPU has no bf16 MatMul/Gemm/Conv: a bf16 model runs as its exact fp32 copy.
    const wide = await widenedSession(ort, src, options);
    if (wide) return ok(wrap(ort, wide, backend, label, WIDENED_NOTE));
    // The file was readable, so ORT rejected the model itself (bad proto, invalid graph, unknown op).
    return err('verify-mismatch', `ORT (${backend}) failed to load ${label}: ${firstLine(e)}`);
  }
  return ok(wrap(ort, s, backend, label));
}

/** A session of the model's fp32 copy when it holds bf16 and the copy loads; undefined otherwise. */
async function widenedSession(ort: Ort, src: ModelSource, options: ortNode.InferenceSession.SessionOptions): Promise<ortNode.InferenceSession | undefined> {
  const bytes = widenedCopy(src);
  if (!bytes) return undefined;
  try {
    return await ort.InferenceSession.create(bytes, options);
  } catch {
    return undefined;
  }
}

/**
 * The encoded fp32 copy of a model that holds bf16 (widen-bf16.ts), or undefined when it
 * holds none, is too large to load from memory, or keeps bf16 data in external files.
 */
export function widenedCopy(src: ModelSource): Uint8Array | undefined {
  try {
    if ('path' in src && statSync(src.path).size > MAX_PROTO_BYTES) return undefined;
    const model = decodeModel('path' in src ? readFileSync(src.path) : src.bytes);
    if (!holdsBf16(model)) return undefined;
    const wide = widenBf16(model);
    return typeof wide === 'string' ? undefined : encodeModel(wide);
  } catch {
    return undefined;
  }
}

function wrap(ort: Ort, s: ortNode.InferenceSession, backend: Backend, label: string, widened?: string): Session {
  const info = (m: ortNode.InferenceSession.ValueMetadata): ValueInfo =>
    m.isTensor ? { name: m.name, isTensor: true, type: m.type, shape: [...m.shape] } : { name: m.name, isTensor: false, type: '', shape: [] };
  const inputs = s.inputMetadata.map(info);
  const outputs = s.outputMetadata.map(info);

  const toOrt = (feeds: Feeds): Result<Record<string, ortNode.Tensor>> => {
    const out: Record<string, ortNode.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) {
      try {
        out[name] = new ort.Tensor(t.type, t.data as never, t.dims);
      } catch (e) {
        return err('usage', `${label}: bad feed ${name}: ${firstLine(e)}`);
      }
    }
    return ok(out);
  };

  return {
    backend,
    label,
    inputs,
    outputs,
    ...(widened ? { widened } : {}),
    async run(feeds, fetches) {
      const f = toOrt(feeds);
      if (!f.ok) return f;
      let r: ortNode.InferenceSession.ReturnType;
      try {
        r = fetches ? await s.run(f.value, fetches as string[]) : await s.run(f.value);
      } catch (e) {
        return err('verify-mismatch', `ORT (${backend}) failed to run ${label}: ${firstLine(e)}`);
      }
      const out: Record<string, HostTensor> = {};
      for (const [name, v] of Object.entries(r)) {
        if (!isElemType(v.type)) return err('unsupported', `${label}: output ${name} has type ${v.type}, which we cannot compare`);
        out[name] = { type: v.type, dims: [...v.dims], data: v.data as HostData };
      }
      return ok(out);
    },
    prepare(feeds) {
      const f = toOrt(feeds);
      if (!f.ok) return f;
      const native = f.value;
      return ok(async () => { await s.run(native); });
    },
    release: () => s.release(),
  };
}
