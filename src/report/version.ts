/**
 * The tool's name and version, as reports, --version and the written model's metadata give
 * them. The version is package.json's, read once at load so there is one place to bump it:
 * through the package's own name (its `exports` lists ./package.json), which resolves to
 * the same file from the sources (src/report/, run by tsx or vitest) and from the
 * installed package (dist/src/report/), whatever the depth. Where Node's require is not
 * available (the browser build's stand-in throws), the version reads as unknown rather
 * than failing the import.
 */
import { createRequire } from 'node:module';

export const TOOL_NAME = 'onnx-lr';

/** What TOOL_VERSION is when package.json cannot be read. */
export const UNKNOWN_VERSION = '0.0.0-unknown';

function packageVersion(): string {
  try {
    const pkg = createRequire(import.meta.url)(`${TOOL_NAME}/package.json`) as { name?: unknown; version?: unknown };
    if (pkg.name === TOOL_NAME && typeof pkg.version === 'string') return pkg.version;
  } catch {
    // Not Node, or a layout without the package.json: reported as unknown.
  }
  return UNKNOWN_VERSION;
}

export const TOOL_VERSION: string = packageVersion();
