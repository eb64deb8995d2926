/**
 * node:module in the browser build. require() knows one module: the package's own
 * package.json (report/version.ts reads the version from it), whose name and version the
 * build defines (vite.web.config.ts); everything else is Node-only (e.g. resolving
 * onnxruntime-node for the ORT-node GEMM worker).
 */
import { unavailable } from './unavailable.js';

declare const __ONNX_LR_PACKAGE__: { name: string; version: string } | undefined;

export function createRequire(_from: string | URL): ((id: string) => unknown) & { resolve: (id: string) => string } {
  const pkg = typeof __ONNX_LR_PACKAGE__ === 'undefined' ? undefined : __ONNX_LR_PACKAGE__;
  const req = (id: string): unknown => {
    if (pkg && id === `${pkg.name}/package.json`) return { ...pkg };
    return unavailable(`require('${id}')`)();
  };
  return Object.assign(req, { resolve: (id: string) => unavailable(`require.resolve('${id}')`)() });
}
