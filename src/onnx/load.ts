/**
 * Loading .onnx files. Loading validates what later stages rely on (a graph, a supported
 * IR version, every external reference inside the model folder and in bounds) without
 * reading external payloads.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LrError } from '../errors.js';
import { readFileChunked } from '../util/fsio.js';
import type { InputPath } from '../util/output-paths.js';
import { decodeModel } from './codec.js';
import { ExternalDataReader, type ExternalReader } from './external.js';
import type { GraphProto, ModelProto, NodeProto } from './schema.js';
import { isExternal } from './tensor.js';
import { validateModel } from './validate.js';
import { forEachTensor } from './walk.js';

/** ORT accepts IR versions up to 13 (see DESIGN-NOTES). */
export const MAX_IR_VERSION = 13;
/** Protobuf messages cannot exceed 2 GiB - 1. */
export const MAX_PROTOBUF_BYTES = 2 ** 31 - 1;

export interface LoadedModel {
  model: ModelProto;
  /** Absolute path of the .onnx file. */
  path: string;
  /** Its folder: external data locations are relative to it. */
  dir: string;
  external: ExternalReader;
  byteSize: number;
  /** Resolved paths of the external data files the model reads (outputs may not replace them). */
  dataFiles: readonly string[];
}

/**
 * Invalid constructs that make ONNX Runtime 1.30 abort the whole process (a C++ assertion,
 * not an error it reports) when it loads the model: refused here with a message instead.
 * - Split with 1 <= num_outputs < its number of outputs (onnx Split-18 shape inference
 *   indexes past the end of its split sizes).
 */
function checkOrtAborts(model: ModelProto, file: string): void {
  const nodes = (g: GraphProto | undefined, out: NodeProto[]): void => {
    if (!g) return;
    for (const n of g.node) {
      out.push(n);
      for (const a of n.attribute) { nodes(a.g, out); for (const sg of a.graphs) nodes(sg, out); }
    }
  };
  const all: NodeProto[] = [];
  nodes(model.graph, all);
  for (const f of model.functions) for (const n of f.node) all.push(n);
  for (const t of model.trainingInfo) { nodes(t.initialization, all); nodes(t.algorithm, all); }
  for (const n of all) {
    if (n.opType !== 'Split' || ((n.domain ?? '') !== '' && n.domain !== 'ai.onnx')) continue;
    const v = n.attribute.find((a) => a.name === 'num_outputs')?.i;
    if (v !== undefined && v >= 1n && v < BigInt(n.output.length)) {
      throw new LrError('parse', `${file}: node "${n.name ?? ''}" (Split) has num_outputs ${v} but ${n.output.length} outputs: an invalid model (ONNX Runtime aborts on it)`);
    }
  }
}

/**
 * An .onnx file's bytes, decoded and checked as loadModel checks them (no file access:
 * the browser build parses the bytes of a dropped file with it). `file` names it in errors.
 */
export function parseModel(bytes: Uint8Array, file: string): ModelProto {
  if (bytes.length === 0) throw new LrError('parse', `${file} is empty, not an ONNX model`);
  let model: ModelProto;
  try {
    model = decodeModel(bytes);
  } catch (e) {
    // Any decoder failure on file content is a parse error for the user, whatever its type.
    if (e instanceof LrError) throw new LrError(e.kind, `${file}: ${e.message}`);
    throw new LrError('parse', `${file}: not a valid ONNX protobuf (${(e as Error).message})`);
  }
  if (model.irVersion === undefined) throw new LrError('parse', `${file}: no ir_version (not an ONNX model?)`);
  if (model.irVersion > MAX_IR_VERSION) {
    throw new LrError('unsupported', `${file}: IR version ${model.irVersion} is newer than the supported ${MAX_IR_VERSION}`);
  }
  if (!model.graph) throw new LrError('parse', `${file}: the model has no graph`);
  if (model.irVersion >= 3 && model.opsetImport.length === 0) throw new LrError('parse', `${file}: the model has no opset_import`);
  checkOrtAborts(model, file);
  validateModel(model, file);
  return model;
}

export function loadModel(file: string): LoadedModel {
  const abs = path.resolve(file);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new LrError('io', `no such file: ${file}`);
    throw new LrError('io', `cannot open ${file}: ${(e as Error).message}`);
  }
  if (st.isDirectory()) throw new LrError('io', `${file} is a directory, not an ONNX file`);
  // Opening a FIFO or a device would block or never end: only regular files are models.
  if (!st.isFile()) throw new LrError('io', `${file} is not a regular file`);
  if (st.size > MAX_PROTOBUF_BYTES) {
    throw new LrError('unsupported', `${file} is ${st.size} bytes: an ONNX protobuf cannot exceed 2 GiB (large weights belong in external data)`);
  }
  const bytes = readFileChunked(abs, { maxBytes: MAX_PROTOBUF_BYTES });
  const model = parseModel(bytes, file);
  const dir = path.dirname(abs);
  const external = new ExternalDataReader(dir);
  const dataFiles = new Set<string>();
  try {
    forEachTensor(model, (t) => { if (isExternal(t)) dataFiles.add(external.resolve(t).file); });
  } catch (e) {
    external.close();
    throw e;
  }
  return { model, path: abs, dir, external, byteSize: bytes.length, dataFiles: [...dataFiles] };
}

/** The files a loaded model reads, labelled for messages. */
export function modelInputs(src: { path?: string; dataFiles?: readonly string[] }): InputPath[] {
  return [
    ...(src.path ? [{ path: src.path, label: 'the input', isModel: true }] : []),
    ...(src.dataFiles ?? []).map((f) => ({ path: f, label: "the input's external data file" })),
  ];
}
