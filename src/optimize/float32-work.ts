/**
 * `optimize --compute float32`: the run works on a copy of IN that computes in float32
 * (rewrite/compute-float32.ts), written to a temp folder so that every stage (shapes,
 * statistics, a budget's restarts from IN) reads one consistent model; OUT is verified and
 * timed against IN itself, so the report's speed-up is over the file the user has.
 */
import path from 'node:path';
import type { LoadedModel } from '../onnx/load.js';
import { saveModel } from '../onnx/save.js';
import { computeInFloat32, computesInFloat16, float32Changes } from '../rewrite/compute-float32.js';
import { makeWorkDir } from '../util/temp-files.js';

export interface Float32Copy {
  /** The converted copy, to run on; undefined when IN computes in float32 already. */
  path?: string;
  /** Said in the report. */
  note: string;
  /** Removes the copy (idempotent). */
  dispose(): void;
}

/** Converts `loaded` in place and writes it to a temp folder; `loaded` is then only good for closing. */
export function float32Copy(loaded: LoadedModel): Float32Copy {
  if (!computesInFloat16(loaded.model)) return { note: '--compute float32: IN computes in float32 already, nothing to change', dispose: () => {} };
  const c = computeInFloat32(loaded.model);
  // An interrupted run leaves no copy behind; after a SIGKILL the supervisor, or the next run making one, removes it.
  const { dir, dispose } = makeWorkDir();
  const file = path.join(dir, 'in.f32.onnx');
  try {
    saveModel(loaded, file);
    return {
      path: file, dispose,
      note: `--compute float32: the run worked on a copy of IN that computes in float32 (${float32Changes(c)}); OUT is verified and timed against IN itself`,
    };
  } catch (e) {
    dispose();
    throw e;
  }
}
