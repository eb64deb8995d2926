/**
 * loadModel() and saveModel(): an .onnx file (or its bytes) as a decoded ModelProto, and
 * back, losslessly (fields this tool does not know survive), written atomically.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel as loadFile, saveModel as saveFile, type SaveOptions, type SaveResult } from '../onnx/file.js';
import type { ExternalReader } from '../onnx/external.js';
import type { ModelProto } from '../onnx/schema.js';
import { inTempDir, withModelPath, type ModelInput } from './model-input.js';

export interface OnnxModel {
  /** The decoded model: every field of the file, including ones this tool does not use. */
  proto: ModelProto;
  /** The file it came from (absent for bytes): external data is read relative to it. */
  path?: string;
  /** Size of the protobuf, bytes. */
  byteSize: number;
  /** Reads external tensors still in their data files; close() when done. */
  external: ExternalReader;
  dataFiles: readonly string[];
  close(): void;
}

/** Decodes and checks a model (a path or bytes); external payloads stay in their files until saved. */
export async function loadModel(input: ModelInput): Promise<OnnxModel> {
  return withModelPath(input, async (file) => {
    const loaded = loadFile(file);
    const fromFile = typeof input === 'string';
    return {
      proto: loaded.model, byteSize: loaded.byteSize, external: loaded.external, dataFiles: loaded.dataFiles,
      ...(fromFile && { path: loaded.path }),
      close: () => loaded.external.close(),
    };
  });
}

/** Writes a model atomically to `outPath` (never over its own input unless `force`); with no path, returns its bytes. */
export function saveModel(model: OnnxModel | ModelProto, outPath: string, opts?: SaveOptions): SaveResult;
export function saveModel(model: OnnxModel | ModelProto): Promise<Uint8Array>;
export function saveModel(model: OnnxModel | ModelProto, outPath?: string, opts: SaveOptions = {}): SaveResult | Promise<Uint8Array> {
  const source = 'proto' in model
    ? { model: model.proto, external: model.external, ...(model.path !== undefined && { path: model.path }), dataFiles: model.dataFiles }
    : model;
  if (outPath !== undefined) return saveFile(source, outPath, opts);
  return inTempDir(async (dir) => {
    const file = path.join(dir, 'model.onnx');
    saveFile(source, file, { externalData: false });
    return new Uint8Array(fs.readFileSync(file));
  });
}
