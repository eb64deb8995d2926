/**
 * A model given to the library as a file path or as its bytes. The pipeline and ONNX
 * Runtime read files (a model's external data sits beside it), so bytes are written to a
 * private temp folder for the call and removed after it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LrError } from '../errors.js';

/** A path to an .onnx file, or the bytes of one (a model with external data needs its path). */
export type ModelInput = string | Uint8Array;

/** What reports and messages call a model given as bytes. */
export const describeInput = (input: ModelInput): string => (typeof input === 'string' ? input : `<${input.length} bytes>`);

export function checkInput(input: unknown, what = 'model'): asserts input is ModelInput {
  if (typeof input !== 'string' && !(input instanceof Uint8Array)) {
    throw new LrError('usage', `${what}: expected a file path or the model's bytes (a Uint8Array), got ${input === null ? 'null' : typeof input}`);
  }
}

/** A temp folder for one call, removed (with whatever is in it) when `fn` settles. */
export async function inTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-'));
  try {
    return await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs `fn` on a path holding `input`: a path as given, bytes in a temp file. */
export async function withModelPath<T>(input: ModelInput, fn: (file: string) => Promise<T>, what = 'model'): Promise<T> {
  checkInput(input, what);
  if (typeof input === 'string') return fn(input);
  return inTempDir(async (dir) => {
    const file = path.join(dir, 'model.onnx');
    fs.writeFileSync(file, input);
    try {
      return await fn(file);
    } catch (e) {
      // Messages name the model as the caller gave it, not by the temp file.
      if (e instanceof Error) e.message = e.message.split(file).join(describeInput(input));
      throw e;
    }
  });
}
