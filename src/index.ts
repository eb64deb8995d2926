/**
 * onnx-lr as a library: the command line's commands as typed calls, with its defaults,
 * taking a model as a file path or as bytes, and returning what the command prints.
 *
 *   const { report, pass } = await optimize('model.onnx', { output: 'model.lr.onnx', maxError: 'cosine:0.995' });
 *
 * Expected failures (a missing file, a bad option, a model ONNX Runtime rejects) throw an
 * LrError whose `kind` says which; a failed verification is not an error: `pass` is false.
 */
export { optimize, plan, type OptimizeOptions, type OptimizeResult } from './api/optimize.js';
export { inspect, type InspectLayer, type InspectOptions, type InspectResult } from './api/inspect.js';
export { verify, type VerifyOptions, type VerifyStats } from './api/verify.js';
export { loadModel, saveModel, type OnnxModel } from './api/model-io.js';
export { computeInFloat32, computesInFloat16, type Float32Compute } from './rewrite/compute-float32.js';
export type { ModelInput } from './api/model-input.js';
export type { OptimizeSettings } from './api/settings.js';
export * as defaults from './api/defaults.js';
export { LrError, type LrErrorKind } from './errors.js';
export { renderReport, type Report } from './report/report.js';
export { renderHtmlReport, type HtmlReportOptions } from './report/html-report.js';
export type { LayerRecord, LayerSensitivity } from './report/records.js';
export type { PlanFile } from './optimize/plan.js';
export type { SaveOptions, SaveResult } from './onnx/file.js';
export type { ModelProto } from './onnx/schema.js';
export type { MethodChoice } from './optimize/driver.js';
