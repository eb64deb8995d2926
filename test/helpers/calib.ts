/** Calibration data for tests: seeded standard-normal samples in one .npy file. */
import path from 'node:path';
import { writeNpy } from '../../src/io/npy.js';
import { createRng } from '../../src/util/rng.js';

/** Writes `dir`/calib.npy of float32 `dims` from seed `seed`; returns its path. */
export function calibFile(dir: string, dims: readonly number[], seed: number): string {
  const n = dims.reduce((a, b) => a * b, 1);
  const rng = createRng(seed);
  const f = path.join(dir, 'calib.npy');
  const r = writeNpy(f, { dtype: 'f4', shape: [...dims], data: Float32Array.from({ length: n }, () => rng.normal()) });
  if (!r.ok) throw r.error;
  return f;
}
