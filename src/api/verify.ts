/**
 * verify(): runs two models side by side in ONNX Runtime on the same seeded (or given)
 * inputs and compares every output, as `optimize` does after writing OUT.
 */
import { unwrap } from '../errors.js';
import type { ModelSource } from '../verify/session.js';
import { verifyModels, type VerifyOptions, type VerifyStats } from '../verify/verify.js';
import { checkInput, type ModelInput } from './model-input.js';
import { DEFAULT_MIN_COSINE, DEFAULT_SEED, DEFAULT_THREADS, DEFAULT_VERIFY_ATOL, DEFAULT_VERIFY_RTOL } from './defaults.js';

export type { VerifyOptions, VerifyStats };

/** A path or bytes as ORT's model source (verifyModels takes `{ path }` or `{ bytes }`, not a bare string). */
export function modelSource(input: ModelInput, what: string): ModelSource {
  checkInput(input, what);
  return typeof input === 'string' ? { path: input } : { bytes: input };
}

/**
 * The verdict (`pass`, with every reason) and per-output agreement, judged as `optimize`
 * judges OUT: by the cosine (0.99 unless `minCosine`), elementwise only with `atol`/`rtol`.
 * Throws only when the models cannot be compared.
 */
export async function verify(original: ModelInput, optimized: ModelInput, opts: VerifyOptions = {}): Promise<VerifyStats> {
  const a = modelSource(original, 'original');
  const b = modelSource(optimized, 'optimized');
  return unwrap(await verifyModels(a, b, {
    seed: DEFAULT_SEED, minCosine: DEFAULT_MIN_COSINE, threads: DEFAULT_THREADS, atol: DEFAULT_VERIFY_ATOL, rtol: DEFAULT_VERIFY_RTOL, ...opts,
  }));
}
