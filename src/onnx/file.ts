/**
 * Loading and saving .onnx files, in one import: load.ts (read and check), save.ts (atomic,
 * external data by content hash, never over an input), walk.ts (every tensor of a model),
 * data-files.ts (OUT's data files and their clean-up).
 */
export { loadModel, MAX_IR_VERSION, MAX_PROTOBUF_BYTES, modelInputs, type LoadedModel } from './load.js';
export { prepareSave, saveModel, type PreparedSave } from './save.js';
export {
  AUTO_EXTERNAL_BYTES, DEFAULT_EXTERNAL_THRESHOLD, EXTERNAL_ALIGN, INLINE_INT_1D_BYTES, INLINE_INT_BYTES,
  type ExternalDataOptions, type ModelSource, type SaveOptions, type SaveResult,
} from './save-options.js';
export { forEachTensor, mapTensors, type TensorSite } from './walk.js';
export { dataFileName, removeLeftovers } from './data-files.js';
