/**
 * Loading and saving .onnx files. Loading validates what later stages rely on (a graph,
 * a supported IR version, every external reference inside the model folder and in
 * bounds) without reading external payloads. Saving is atomic (temp + rename), streams
 * external data tensor by tensor, and never modifies its input.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LrError } from '../errors.js';
import { commitFiles, nodeFs, readFileChunked, TempFile, type FsLike } from '../util/fsio.js';
import { decodeModel, encodeParts, partsLength } from './codec.js';
import { checkLocation, ExternalDataReader, type ExternalReader } from './external.js';
import { DATA_LOCATION_EXTERNAL, DataType, SCHEMA, type GraphProto, type MessageName, type ModelProto, type NodeProto, type TensorProto } from './schema.js';
import { dataTypeBits, isExternal, tensorByteSize, tensorRawBytes } from './tensor.js';

/** ORT accepts IR versions up to 13 (see DESIGN-NOTES). */
export const MAX_IR_VERSION = 13;
/** Protobuf messages cannot exceed 2 GiB - 1. */
export const MAX_PROTOBUF_BYTES = 2 ** 31 - 1;
/** Above this inline size, saveModel moves initializers to external data unless told not to. */
export const AUTO_EXTERNAL_BYTES = 2 ** 31 - 64 * 2 ** 20;
/** Offsets in external data files are multiples of this (lets ORT mmap them). */
export const EXTERNAL_ALIGN = 4096;
export const DEFAULT_EXTERNAL_THRESHOLD = 1024;
/**
 * Integer initializers smaller than this stay inline whatever the threshold: they are shape,
 * axes and index constants, and ORT (1.30) refuses to load a model whose shape inference
 * needs one of them from external data ("Cannot parse data from external tensors").
 */
export const INLINE_INT_BYTES = 1024;

const isIntType = (dt: number): boolean => dt === DataType.INT64 || dt === DataType.INT32 || dt === DataType.INT16
  || dt === DataType.INT8 || dt === DataType.UINT64 || dt === DataType.UINT32 || dt === DataType.UINT16 || dt === DataType.UINT8;

export interface LoadedModel {
  model: ModelProto;
  /** Absolute path of the .onnx file. */
  path: string;
  /** Its folder: external data locations are relative to it. */
  dir: string;
  external: ExternalReader;
  byteSize: number;
}

// ---- walking every tensor ---------------------------------------------------------------

/** Where a tensor sits: a graph initializer (may be stored externally) or anywhere else. */
export type TensorSite = 'initializer' | 'other';

type Obj = Record<string, unknown>;
const isMessage = (k: string): k is MessageName => k in SCHEMA;

function mapMessage(m: MessageName, obj: Obj, fn: (t: TensorProto, site: TensorSite) => TensorProto): Obj {
  let out: Obj | undefined;
  for (const f of SCHEMA[m]) {
    const kind = f.kind;
    const v = obj[f.name];
    if (!isMessage(kind) || v === undefined || v === null) continue;
    const site: TensorSite = m === 'GraphProto' && f.name === 'initializer' ? 'initializer' : 'other';
    const one = (x: Obj): Obj => (kind === 'TensorProto' ? (fn(x as unknown as TensorProto, site) as unknown as Obj) : mapMessage(kind, x, fn));
    let next: unknown;
    if (f.repeated) {
      const arr = v as Obj[];
      let copy: Obj[] | undefined;
      arr.forEach((x, i) => {
        const y = one(x);
        if (y !== x) (copy ??= arr.slice())[i] = y;
      });
      next = copy ?? arr;
    } else {
      next = one(v as Obj);
    }
    if (next !== v) (out ??= { ...obj })[f.name] = next;
  }
  return out ?? obj;
}

/**
 * Returns the model with every TensorProto (graph initializers at any depth, node
 * attributes, sparse tensors, functions, training info) replaced by fn's result. Copies
 * only the path to changed tensors; the input model is not modified.
 */
export function mapTensors(model: ModelProto, fn: (t: TensorProto, site: TensorSite) => TensorProto): ModelProto {
  return mapMessage('ModelProto', model as unknown as Obj, fn) as unknown as ModelProto;
}

export function forEachTensor(model: ModelProto, fn: (t: TensorProto, site: TensorSite) => void): void {
  mapTensors(model, (t, site) => { fn(t, site); return t; });
}

// ---- load -------------------------------------------------------------------------------

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

  const dir = path.dirname(abs);
  const external = new ExternalDataReader(dir);
  try {
    forEachTensor(model, (t) => { if (isExternal(t)) external.resolve(t); });
  } catch (e) {
    external.close();
    throw e;
  }
  return { model, path: abs, dir, external, byteSize: bytes.length };
}

// ---- save -------------------------------------------------------------------------------

export interface ExternalDataOptions {
  /** File name beside the output (a plain name, no folders); default `<OUT basename>.data`. */
  location?: string;
  /**
   * Initializers with payloads of at least this many bytes go external; default 1024.
   * Integer tensors under INLINE_INT_BYTES stay inline regardless.
   */
  threshold?: number;
}

export interface SaveOptions {
  /**
   * true / options: move large initializers to an external file. false: keep all inline
   * (fails past 2 GiB). Absent: inline, unless the protobuf would pass ~2 GiB.
   */
  externalData?: boolean | ExternalDataOptions;
  /** Allow OUT (or its data file) to be the input file or one of its data files. */
  force?: boolean;
  /** Test hook: fs-like object for writes (to simulate a full disk). */
  fs?: FsLike;
  /** Test hook: inline size above which external data is chosen automatically. */
  autoExternalBytes?: number;
}

export interface SaveResult {
  path: string;
  bytes: number;
  /** The external data file, when one was written. */
  externalPath?: string;
  externalBytes?: number;
  externalTensors: number;
}

/** A model to save, with the reader for any external tensors it still refers to. */
export type ModelSource = LoadedModel | { model: ModelProto; external?: ExternalReader; path?: string } | ModelProto;

const PAYLOAD_FIELDS = ['rawData', 'floatData', 'int32Data', 'int64Data', 'doubleData', 'uint64Data'] as const;

function withoutPayload(t: TensorProto): TensorProto {
  const c: TensorProto = { ...t, externalData: [] };
  for (const k of PAYLOAD_FIELDS) delete c[k];
  delete c.dataLocation;
  return c;
}

function realpathOrNull(p: string): string | null {
  try { return fs.realpathSync(p); } catch { return null; }
}

/** Realpath of a file that may not exist yet (its folder must). */
function realTarget(p: string): string {
  return realpathOrNull(p) ?? path.join(realpathOrNull(path.dirname(p)) ?? path.dirname(p), path.basename(p));
}

/** Writes byte parts with few system calls: small parts are gathered into 1 MiB chunks. */
function writeCoalesced(tmp: TempFile, parts: readonly Uint8Array[]): void {
  const CHUNK = 1 << 20;
  let buf: Uint8Array | undefined;
  let used = 0;
  const flush = (): void => { if (buf && used > 0) tmp.write(buf.subarray(0, used)); used = 0; };
  for (const p of parts) {
    if (p.length >= CHUNK / 4) { flush(); tmp.write(p); continue; }
    if (used + p.length > CHUNK) flush();
    buf ??= new Uint8Array(CHUNK);
    buf.set(p, used);
    used += p.length;
  }
  flush();
}

export function saveModel(source: ModelSource, outPath: string, opts: SaveOptions = {}): SaveResult {
  const src = 'model' in source ? source : { model: source as ModelProto };
  const model = src.model;
  const reader = src.external;
  const fsx = opts.fs ?? nodeFs;
  const out = path.resolve(outPath);
  if (realpathOrNull(out) !== null && fs.statSync(out).isDirectory()) throw new LrError('io', `${outPath} is a directory`);

  // Decide on external data. Inline size estimate: the model as it is, plus external payloads.
  let ext = opts.externalData;
  if (!ext) {
    let inline = partsLength(encodeParts('ModelProto', model));
    forEachTensor(model, (t) => { if (isExternal(t)) inline += tensorByteSize(t) + 16; });
    if (ext === undefined && inline > (opts.autoExternalBytes ?? AUTO_EXTERNAL_BYTES)) ext = true;
    // Refuse before reading gigabytes of external data into memory.
    else if (ext === false && inline > MAX_PROTOBUF_BYTES) {
      throw new LrError('unsupported', `the model protobuf would be about ${inline} bytes inline, over the 2 GiB limit (use external data)`);
    }
  }
  const cfg = ext ? (ext === true ? {} : ext) : undefined;
  const threshold = cfg?.threshold ?? DEFAULT_EXTERNAL_THRESHOLD;
  const location = cfg?.location ?? `${path.basename(out)}.data`;
  if (cfg) {
    if (!(threshold >= 0)) throw new LrError('usage', `external data threshold must be a byte count >= 0, not ${threshold}`);
    checkLocation(location, `output ${outPath}`);
    if (/[\\/]/.test(location)) throw new LrError('usage', `external data location "${location}" must be a plain file name beside ${outPath}`);
  }
  const dataPath = path.join(path.dirname(out), location);

  // Never overwrite the input (or its data files) unless forced.
  const inputs = new Set<string>();
  if (src.path) { const r = realpathOrNull(src.path); if (r) inputs.add(r); }
  if (reader instanceof ExternalDataReader) {
    forEachTensor(model, (t) => { if (isExternal(t)) inputs.add(reader.resolve(t).file); });
  }
  const targets = cfg ? [out, dataPath] : [out];
  if (cfg && realTarget(dataPath) === realTarget(out)) throw new LrError('usage', `external data location "${location}" is the output file itself`);
  if (!opts.force) {
    for (const t of targets) {
      if (inputs.has(realTarget(t))) throw new LrError('usage', `refusing to overwrite the input file ${t} (use --force to allow it)`);
    }
  }

  const temps: TempFile[] = [];
  let dataTmp: TempFile | undefined;
  let externalTensors = 0;
  try {
    const outModel = mapTensors(model, (t, site) => {
      const dt = t.dataType ?? DataType.UNDEFINED;
      // Only initializers go external: ORT loads external data for initializers, and
      // Constant-node / attribute tensors are kept inline to be safe.
      // Types without a fixed element size (STRING, unknown) cannot be laid out externally: kept inline.
      const size = cfg && site === 'initializer' && dataTypeBits(dt) > 0 ? tensorByteSize(t) : -1;
      // Empty tensors stay inline too: ORT fails to read a zero-length external range.
      if (size > 0 && size >= threshold && !(isIntType(dt) && size < INLINE_INT_BYTES)) {
        const bytes = tensorRawBytes(t, reader);
        if (!dataTmp) { dataTmp = new TempFile(dataPath, fsx); temps.push(dataTmp); }
        const pad = (EXTERNAL_ALIGN - (dataTmp.bytesWritten % EXTERNAL_ALIGN)) % EXTERNAL_ALIGN;
        if (pad) dataTmp.write(new Uint8Array(pad));
        const offset = dataTmp.bytesWritten;
        dataTmp.write(bytes);
        externalTensors++;
        return {
          ...withoutPayload(t),
          externalData: [
            { key: 'location', value: location },
            { key: 'offset', value: String(offset) },
            { key: 'length', value: String(bytes.length) },
          ],
          dataLocation: DATA_LOCATION_EXTERNAL,
        };
      }
      if (isExternal(t)) return { ...withoutPayload(t), rawData: tensorRawBytes(t, reader) };
      return t;
    });
    const parts = encodeParts('ModelProto', outModel);
    const size = partsLength(parts);
    if (size > MAX_PROTOBUF_BYTES) {
      throw new LrError('unsupported', `the model protobuf would be ${size} bytes, over the 2 GiB limit${cfg ? ' even with external data' : ' (use external data)'}`);
    }
    const modelTmp = new TempFile(out, fsx);
    temps.push(modelTmp);
    writeCoalesced(modelTmp, parts);
    commitFiles(temps, fsx); // data file first, the model last
    return {
      path: out,
      bytes: size,
      externalTensors,
      ...(dataTmp ? { externalPath: dataPath, externalBytes: dataTmp.bytesWritten } : {}),
    };
  } catch (e) {
    for (const t of temps) t.discard();
    throw e;
  }
}
