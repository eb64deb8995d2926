/**
 * Reads intermediate tensors (for shape discovery and calibration statistics). The caller
 * passes a model in which the wanted tensor names were already added to the graph
 * outputs; here we only run it and fetch those outputs, nothing else (big activations of
 * other outputs are never copied out of ORT).
 */
import { err, ok, type Result } from '../errors.js';
import { createSession, type ModelSource, type SessionOptions } from './session.js';
import type { Feeds, HostTensor } from './tensor.js';

export interface TensorFetcher {
  readonly names: readonly string[];
  run(feeds: Feeds): Promise<Result<Record<string, HostTensor>>>;
  release(): Promise<void>;
}

/** Opens one session for many runs (calibration loops over batches). */
export async function openFetcher(model: ModelSource, names: readonly string[], opts: SessionOptions = {}): Promise<Result<TensorFetcher>> {
  const s = await createSession(model, opts);
  if (!s.ok) return s;
  const session = s.value;
  const outs = new Set(session.outputs.map((o) => o.name));
  const missing = names.filter((n) => !outs.has(n));
  if (missing.length) {
    await session.release();
    return err('usage', `${session.label}: not graph outputs (add them to the graph outputs first): ${missing.join(', ')}`);
  }
  return ok({ names, run: (feeds) => session.run(feeds, names), release: () => session.release() });
}

/** One-shot: open, run once, release. */
export async function fetchTensors(model: ModelSource, feeds: Feeds, names: readonly string[], opts: SessionOptions = {}): Promise<Result<Record<string, HostTensor>>> {
  const f = await openFetcher(model, names, opts);
  if (!f.ok) return f;
  try {
    return await f.value.run(feeds);
  } finally {
    await f.value.release();
  }
}
