/**
 * onnxruntime-web is an optional peer dependency (139 MB), needed only to time models in
 * its wasm backend (--bench-web): checked before any work, so its absence costs nothing.
 */
import { LrError } from '../errors.js';

export async function requireWebBackend(): Promise<void> {
  try {
    await import('onnxruntime-web');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw e;
    throw new LrError('unsupported', '--bench-web needs onnxruntime-web, an optional dependency that is not installed (npm install onnxruntime-web@1.30.0)');
  }
}
