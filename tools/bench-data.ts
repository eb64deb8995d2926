/**
 * Real calibration and held-out inputs for the benches, from the six face-api photos
 * (tools/photos.ts: three to calibrate, three held out, never mixed):
 * - photoTensors: each photo as a few views (the whole photo and crops of it), each
 *   resized to H×W and normalised, as one [N, 3, H, W] float32 array (more samples for a
 *   small input such as PP-OCR det's 320², from the same three photos);
 * - layerInputs: the input tensor of some layers of a model (ISNet's convs), computed by
 *   running the model cut down to those tensors (calib/stats-runs.ts withOutputs) on photo
 *   tensors, one array [N, …] per tensor: the calibration and held-out data of a layer cut
 *   out alone (optimize/layer-latency.ts singleLayerModel), so its fit sees the
 *   activations the photos give it.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { decodeImage, imageToTensor, type RgbaImage } from '../src/calib/image.js';
import { withOutputs } from '../src/calib/stats-runs.js';
import { writeNpy } from '../src/io/npy.js';
import { decodeModel, encodeModel } from '../src/onnx/codec.js';
import type { ModelProto } from '../src/onnx/schema.js';
import type { ExternalBytes } from '../src/onnx/tensor.js';
import { createSession } from '../src/verify/session.js';
import { createRng } from '../src/util/rng.js';

/** A crop as fractions of the photo: left, top, width, height. */
export type View = [number, number, number, number];
export const WHOLE: View = [0, 0, 1, 1];
/** Whole, centre and two corners, each crop 60% of each side. */
export const FOUR_VIEWS: View[] = [WHOLE, [0.2, 0.2, 0.6, 0.6], [0, 0, 0.6, 0.6], [0.4, 0.4, 0.6, 0.6]];

function crop(img: RgbaImage, [l, t, w, h]: View): RgbaImage {
  const x0 = Math.round(l * img.width);
  const y0 = Math.round(t * img.height);
  const cw = Math.max(1, Math.round(w * img.width));
  const ch = Math.max(1, Math.round(h * img.height));
  const data = new Uint8Array(cw * ch * 4);
  for (let y = 0; y < ch; y++) data.set(img.data.subarray(((y0 + y) * img.width + x0) * 4, ((y0 + y) * img.width + x0 + cw) * 4), y * cw * 4);
  return { width: cw, height: ch, data };
}

/** The photos of a folder (sorted), each as `views`, resized to h×w and normalised: [N, 3, h, w]. */
export function photoTensors(dir: string, h: number, w: number, norm: { mean: number[]; std: number[] }, views: readonly View[] = [WHOLE]): { dims: number[]; data: Float32Array } {
  const files = readdirSync(dir).filter((f) => /\.(jpe?g|png)$/i.test(f)).sort();
  const per = 3 * h * w;
  const data = new Float32Array(files.length * views.length * per);
  let k = 0;
  for (const f of files) {
    const img = decodeImage(new Uint8Array(readFileSync(path.join(dir, f))), f);
    if (!img.ok) throw new Error(img.error.message);
    for (const v of views) data.set(imageToTensor(crop(img.value, v), { height: h, width: w, channels: 3, ...norm, layout: 'nchw' }), (k++) * per);
  }
  return { dims: [k, 3, h, w], data };
}

/** An array to save: float32, or float16 as its raw IEEE half bits (as ORT gives and takes them). */
export interface FloatArray { dims: number[]; data: Float32Array | Uint16Array }

export function saveNpy(file: string, a: FloatArray): string {
  const r = writeNpy(file, { dtype: a.data instanceof Uint16Array ? 'f2' : 'f4', shape: a.dims, data: a.data });
  if (!r.ok) throw r.error;
  return file;
}

/**
 * The values of `names` (float32 or float16 tensors of the main graph) on each sample of `input`
 * ([N, …] fed one sample at a time to the model's single input), stacked: [N, …] per name.
 */
export async function layerInputs(
  model: ModelProto, external: ExternalBytes | undefined, names: readonly string[], input: { dims: number[]; data: Float32Array }, threads = 1,
): Promise<Map<string, FloatArray>> {
  const s = await createSession({ bytes: withOutputs(model, names, [], external) }, { intraOpNumThreads: threads });
  if (!s.ok) throw new Error(s.error.message);
  const inputName = s.value.inputs[0]!.name;
  const n = input.dims[0]!;
  const per = input.data.length / n;
  const out = new Map<string, FloatArray>();
  try {
    for (let i = 0; i < n; i++) {
      const r = await s.value.run({ [inputName]: { type: 'float32', dims: [1, ...input.dims.slice(1)], data: input.data.subarray(i * per, (i + 1) * per) } }, names);
      if (!r.ok) throw new Error(r.error.message);
      for (const name of names) {
        const t = r.value[name]!;
        if (t.type !== 'float32' && t.type !== 'float16') throw new Error(`${name} is ${t.type}, not float32 or float16`);
        let o = out.get(name);
        if (!o) { o = { dims: [n, ...t.dims.slice(1)], data: t.type === 'float16' ? new Uint16Array(n * t.data.length) : new Float32Array(n * t.data.length) }; out.set(name, o); }
        (o.data as Float32Array).set(t.data as Float32Array, i * t.data.length);
      }
      process.stderr.write(`  layer inputs: sample ${i + 1}/${n}\n`);
    }
  } finally {
    await s.value.release();
  }
  return out;
}

/** PP-OCR's image normalisation (ImageNet mean and std on [0, 1]). */
export const PPOCR_NORM = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/**
 * A copy of `file` whose outputs produced by a Sigmoid or Softmax are that node's input
 * (the logits): PP-OCR det's probability map is ~0 wherever there is no text, and on
 * random inputs rec's 6625-way softmax is near one-hot, so a relative error of either
 * says little about the layers before it.
 */
export function logitsModel(file: string, out: string): string {
  const m = decodeModel(new Uint8Array(readFileSync(file)));
  const g = m.graph!;
  g.output = g.output.map((o) => {
    const sig = g.node.find((n) => (n.opType === 'Sigmoid' || n.opType === 'Softmax') && n.output[0] === o.name);
    return sig ? { ...o, name: sig.input[0]! } : o;
  });
  writeFileSync(out, encodeModel(m));
  return out;
}

/** A seeded N(0,1) float32 .npy of shape `dims` at dir/name (calibration or held-out inputs). */
export function randomNpy(dir: string, name: string, dims: number[], seed: number): string {
  const rng = createRng(seed);
  return saveNpy(path.join(dir, name), { dims, data: Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => rng.normal()) });
}
