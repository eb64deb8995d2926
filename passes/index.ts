/**
 * Every rewrite, one line each: adding a pass is its file, its line here and its test.
 * Order does not matter: dispatch (dispatch.ts, src/rewrite/registry.ts) ranks passes by
 * their declared `benefit`, and every export of this module must be a pass.
 */
export { conv1x1Svd } from './conv1x1-svd.js';
export { convCp } from './conv-cp.js';
export { convCp4 } from './conv-cp4.js';
export { convSpatialSvd } from './conv-spatial-svd.js';
export { convTransposeSvd } from './convtranspose-svd.js';
export { convTransposeTucker2 } from './convtranspose-tucker2.js';
export { convTt } from './conv-tt.js';
export { convTucker2 } from './conv-tucker2.js';
export { gatherSvd } from './gather-svd.js';
export { gemmSvd } from './gemm-svd.js';
export { matmulBatchedSvd } from './matmul-batched-svd.js';
export { matmulSvd } from './matmul-svd.js';
export { rnnInputSvd } from './rnn-input-svd.js';
