/** The tool's name and version, as reports, --version and the written model's metadata give them. */
export const TOOL_NAME = 'onnx-lr';
export const TOOL_VERSION = '0.1.0';
