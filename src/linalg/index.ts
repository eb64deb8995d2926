/** Public surface of the numerical core (see each module for the maths). */
export * from './matrix.js';
export { gemm, gemmShape, gemmFlops, type GemmOptions } from './gemm.js';
export { createJsGemmEngine, mm, runAsync, runSync, type GemmEngine, type GemmProgram, type GemmRequest } from './engine.js';
export { createOrtGemmEngine, type OrtGemmEngineOptions } from './ort-gemm.js';
export { encodeGemmModel } from './gemm-model.js';
export { solveLowerLeft, solveUpperLeft, solveUpperRight, invertUpper } from './triangular.js';
export { cholesky, choleskyWithRidge, type RidgeCholesky } from './cholesky.js';
export { householderQr, householderR, choleskyQr2, cholQrBasis, cholQrRowsF32, orthonormalize, type QrResult } from './qr.js';
export { eigSym, type EigResult } from './eig-sym.js';
export { svd, svdAsync, singularValues, type SvdResult } from './svd.js';
export {
  truncatedSvd, truncatedSvdSync, truncatedSvdProgram, randomizedSvd, randomizedSvdSync, truncate,
  type TruncatedSvdOptions, type AsyncSvdOptions,
} from './rsvd.js';
export { permute, unfold, swapLeadingAxes, tensorNorm, sizeOf, khatriRao, type Tensor } from './tensor.js';
export { tucker2, tucker2Sync, tucker2Program, reconstructTucker2, type Tucker2Options, type Tucker2Result } from './tucker2.js';
export { cpAls, cpAlsSync, cpAlsProgram, balancedFactors, type CpAlsOptions, type CpAlsResult } from './cp-als.js';
export { tucker2Conv, tucker2Error, type ConvKernel, type Tucker2Conv, type Tucker2ConvOptions } from './tucker2-conv.js';
export { cpConv, cpError, whitenKernel, type CpConv, type CpConvOptions } from './cp-conv.js';
export { whitenedSvdFactors, type ChannelWhitening } from './whitened-svd.js';
export { refitLastFactor, type PatchMoments, type Refit } from './refit.js';
export * from './rank.js';
export { evbmf, evbmfFromSingularValues, evbmfConvRanks, solveTauBar, type EvbmfResult } from './evbmf.js';
