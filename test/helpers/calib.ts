/** Calibration data for tests: seeded standard-normal samples in one .npy file, and statistics read back from one. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadCalibration } from '../../src/calib/load.js';
import { collectStats, type CalibStats } from '../../src/calib/stats.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { writeNpy } from '../../src/io/npy.js';
import { decodeModel } from '../../src/onnx/codec.js';
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

/**
 * The layer statistics (src/calib) of `bytes`, a model with one float input `x`, over the
 * samples `data` of shape `dims` ([n, …one sample]) written to a .npy file in a new temp
 * directory `onnx-lr-TAG-…` and loaded back as the CLI would.
 */
export async function statsFromSamples(bytes: Uint8Array, data: Float32Array, dims: readonly number[], tag: string): Promise<CalibStats['stats']> {
  const dir = mkdtempSync(path.join(tmpdir(), `onnx-lr-${tag}-`));
  const calibPath = path.join(dir, 'calib.npy');
  const wr = writeNpy(calibPath, { dtype: 'f4', shape: [...dims], data });
  if (!wr.ok) throw wr.error;
  const set = loadCalibration(calibPath, { inputs: [{ name: 'x', isTensor: true, type: 'float32', shape: [1, ...dims.slice(1)] }] });
  if (!set.ok) throw set.error;
  const m0 = new Model(decodeModel(bytes));
  const st = await collectStats(m0, findLayers(m0), set.value);
  if (!st.ok) throw st.error;
  return st.value.stats;
}
