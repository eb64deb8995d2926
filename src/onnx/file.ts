/**
 * Loading and saving .onnx files. Loading validates what later stages rely on (a graph,
 * a supported IR version, every external reference inside the model folder and in
 * bounds) without reading external payloads. Saving is atomic (temp + rename), streams
 * external data tensor by tensor into a file named by its content (so a model file only
 * ever names the data written with it), refuses outputs that are an input file, and
 * never modifies its input.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LrError } from '../errors.js';
import { nodeFs, readFileChunked, removeOnInterrupt, removeStaleTemps, TempFile, type FsLike } from '../util/fsio.js';
import { checkOutputs, fileKey, type InputPath, type OutputPath } from '../util/output-paths.js';
import { decodeModel, encodeParts, partsLength } from './codec.js';
import { checkLocation, ExternalDataReader, type ExternalReader } from './external.js';
import { DATA_LOCATION_EXTERNAL, DataType, SCHEMA, type GraphProto, type MessageName, type ModelProto, type NodeProto, type TensorProto } from './schema.js';
import { dataTypeBits, isExternal, tensorByteSize, tensorRawBytes } from './tensor.js';
import { validateModel } from './validate.js';

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
/**
 * 1-D (and scalar) integer initializers smaller than this stay inline too: shapes, axes,
 * pads and repeats are 1-D, and a valid one can pass 1024 bytes (a 130-element Reshape
 * shape did, and ORT refused the model). Quantized weights, the integer tensors worth
 * moving out, have two dims or more.
 */
export const INLINE_INT_1D_BYTES = 64 * 1024;

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
  /** Resolved paths of the external data files the model reads (outputs may not replace them). */
  dataFiles: readonly string[];
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
  validateModel(model, file);

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

// ---- save -------------------------------------------------------------------------------

export interface ExternalDataOptions {
  /**
   * File name beside the output (a plain name, no folders). Default: `<OUT basename>.<hash>.data`,
   * named by a hash of its content, so that a model file can only ever name the data written
   * with it. A given location is used as is: then a run killed between the renames of the
   * data and the model leaves the old model beside the new data.
   */
  location?: string;
  /**
   * Initializers with payloads of at least this many bytes go external; default 1024.
   * Integer tensors under INLINE_INT_BYTES (and 1-D ones under INLINE_INT_1D_BYTES) stay inline regardless.
   */
  threshold?: number;
}

export interface SaveOptions {
  /**
   * true / options: move large initializers to an external file. false: keep all inline
   * (fails past 2 GiB). Absent: inline, unless the protobuf would pass ~2 GiB.
   */
  externalData?: boolean | ExternalDataOptions;
  /** Allow OUT to be the input file (then also OUT's data file to be one of the input's). */
  force?: boolean;
  /** Other files the caller writes beside OUT (a report): they may not be OUT, its data or an input. */
  otherOutputs?: readonly OutputPath[];
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
export type ModelSource = LoadedModel | { model: ModelProto; external?: ExternalReader; path?: string; dataFiles?: readonly string[] } | ModelProto;

/** Integer tensors ORT may read during shape inference stay inline (see INLINE_INT_BYTES). */
function keptInline(t: TensorProto, dt: number, size: number): boolean {
  return isIntType(dt) && (size < INLINE_INT_BYTES || (t.dims.length <= 1 && size < INLINE_INT_1D_BYTES));
}

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

/** Hex digits of the content hash in a default data file name (48 bits). */
const DATA_HASH_HEX = 12;
const MAX_NAME_BYTES = 255;

/**
 * The default data file name for OUT's basename and the data's content hash:
 * `<base>.<hash>.data`, with the base shortened when the name would pass 255 bytes.
 */
export function dataFileName(base: string, hash: string): string {
  const tail = `.${hash}.data`;
  let head = base;
  while (head.length > 0 && Buffer.byteLength(head + tail) > MAX_NAME_BYTES) head = Array.from(head).slice(0, -1).join('');
  return head + tail;
}

/** Whether `name` is a data file name saveModel gives OUT `base` (or gave it before content hashes). */
function isOwnDataName(name: string, base: string): boolean {
  if (name === `${base}.data`) return true;
  const m = /\.([0-9a-f]+)\.data$/.exec(name);
  return m !== null && m[1].length === DATA_HASH_HEX && dataFileName(base, m[1]) === name;
}

/** The files a loaded model reads, labelled for messages. */
export function modelInputs(src: { path?: string; dataFiles?: readonly string[] }): InputPath[] {
  return [
    ...(src.path ? [{ path: src.path, label: 'the input', isModel: true }] : []),
    ...(src.dataFiles ?? []).map((f) => ({ path: f, label: "the input's external data file" })),
  ];
}

/**
 * The plain-name external data files an existing model file refers to, with their identity
 * now (none when it does not exist); undefined when that is not known (not a readable
 * model, a link, or a large protobuf).
 * Large protobufs are skipped (a model with big external data has a small protobuf), and
 * so are links: the model a link or another hard link leads to stays, and still needs its data.
 */
function dataFilesOfExisting(file: string): { file: string; key: string }[] | undefined {
  try {
    let st: fs.Stats;
    try { st = fs.lstatSync(file); } catch (e) { if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []; throw e; }
    if (!st.isFile() || st.nlink !== 1 || st.size > 256 * 2 ** 20 || st.size === 0) return undefined;
    const model = decodeModel(readFileChunked(file));
    const names = new Set<string>();
    forEachTensor(model, (t) => {
      if (!isExternal(t)) return;
      const loc = t.externalData.find((e) => e.key === 'location')?.value;
      if (loc !== undefined && !/[\\/]/.test(loc) && loc !== '.' && loc !== '..' && loc !== '') names.add(loc);
    });
    const dir = path.dirname(file);
    return [...names].map((n) => path.join(dir, n)).filter((f) => fs.existsSync(f)).map((f) => ({ file: f, key: fileKey(f) }));
  } catch {
    return undefined;
  }
}

/**
 * A save whose files are written but not yet in place: the model sits under a temp name
 * beside OUT, and its external data file already under its final (content-hashed) name,
 * so ORT can load `tempPath` as it will load OUT. commit() renames the model into place
 * and removes the data file the replaced OUT used; discard() undoes everything.
 */
export interface PreparedSave {
  readonly result: SaveResult;
  readonly tempPath: string;
  commit(): void;
  discard(): void;
}

/**
 * Writes `source` to `outPath` atomically: saveModel = prepareSave + commit. With external
 * data the data file is written first under a name derived from its content, the model
 * file renamed into place last, and the previous OUT's data file removed only after that:
 * at every instant OUT names data that was written with it.
 */
export function saveModel(source: ModelSource, outPath: string, opts: SaveOptions = {}): SaveResult {
  const prepared = prepareSave(source, outPath, opts);
  try {
    prepared.commit();
  } catch (e) {
    prepared.discard();
    throw e;
  }
  return prepared.result;
}

export function prepareSave(source: ModelSource, outPath: string, opts: SaveOptions = {}): PreparedSave {
  const src = 'model' in source ? source : { model: source as ModelProto };
  const model = src.model;
  const reader = src.external;
  const fsx = opts.fs ?? nodeFs;
  const out = path.resolve(outPath);
  const outDir = path.dirname(out);

  // Never overwrite the input (or its data files, or another output) unless allowed.
  const inputs = modelInputs({ path: 'path' in src ? src.path : undefined, dataFiles: 'dataFiles' in src ? src.dataFiles : undefined });
  if (reader instanceof ExternalDataReader) {
    forEachTensor(model, (t) => { if (isExternal(t)) inputs.push({ path: reader.resolve(t).file, label: "the input's external data file" }); });
  }
  const inPlace = inputs.some((i) => i.isModel && fileKey(i.path) === fileKey(out));
  const outputs: OutputPath[] = [{ path: out, label: 'OUT', mayReplace: 'model' }, ...(opts.otherOutputs ?? [])];
  const check = (dataPath?: string): void => {
    const dataOut: OutputPath[] = dataPath ? [{ path: dataPath, label: "OUT's external data file", ...(inPlace && { mayReplace: 'any' as const }) }] : [];
    checkOutputs([...outputs, ...dataOut], inputs, { force: opts.force });
  };
  check();

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
  if (cfg) {
    if (!(threshold >= 0)) throw new LrError('usage', `external data threshold must be a byte count >= 0, not ${threshold}`);
    if (cfg.location !== undefined) {
      checkLocation(cfg.location, `output ${outPath}`);
      if (/[\\/]/.test(cfg.location)) throw new LrError('usage', `external data location "${cfg.location}" must be a plain file name beside ${outPath}`);
      const given = path.join(outDir, cfg.location);
      if (realTarget(given) === realTarget(out)) throw new LrError('usage', `external data location "${cfg.location}" is the output file itself`);
      check(given);
    }
  }
  let dataTmp: TempFile | undefined;
  let modelTmp: TempFile | undefined;
  let dataPath: string | undefined;
  let dataBackup: string | undefined;
  let dataKeep: string | undefined;
  let dataPlaced = false;
  let dataCreated = false;
  const untrack: (() => void)[] = [];
  let externalTensors = 0;
  const release = (): void => {
    for (const f of [dataKeep, dataBackup]) if (f !== undefined) { try { fsx.unlinkSync(f); } catch { /* restored or gone */ } }
    for (const u of untrack.splice(0)) u();
  };
  const discard = (): void => {
    modelTmp?.discard();
    dataTmp?.discard();
    if (dataPlaced && dataPath !== undefined) {
      try {
        if (dataBackup) fsx.renameSync(dataBackup, dataPath);
        else if (dataCreated) fsx.unlinkSync(dataPath);
      } catch { /* best effort: the original failure is what matters */ }
    }
    release();
  };
  try {
    const hash = createHash('sha256');
    const putData = (bytes: Uint8Array): void => { dataTmp!.write(bytes); hash.update(bytes); };
    // The location is known once all the data is written (it names the content's hash).
    const locations: { key: string; value: string }[] = [];
    const outModel = mapTensors(model, (t, site) => {
      const dt = t.dataType ?? DataType.UNDEFINED;
      // Only initializers go external: ORT loads external data for initializers, and
      // Constant-node / attribute tensors are kept inline to be safe.
      // Types without a fixed element size (STRING, unknown) cannot be laid out externally: kept inline.
      const size = cfg && site === 'initializer' && dataTypeBits(dt) > 0 ? tensorByteSize(t) : -1;
      // Empty tensors stay inline too: ORT fails to read a zero-length external range.
      if (size > 0 && size >= threshold && !keptInline(t, dt, size)) {
        const bytes = tensorRawBytes(t, reader);
        dataTmp ??= new TempFile(path.join(outDir, cfg?.location ?? `${path.basename(out)}.<hash>.data`), fsx);
        const pad = (EXTERNAL_ALIGN - (dataTmp.bytesWritten % EXTERNAL_ALIGN)) % EXTERNAL_ALIGN;
        if (pad) putData(new Uint8Array(pad));
        const offset = dataTmp.bytesWritten;
        putData(bytes);
        externalTensors++;
        const location = { key: 'location', value: '' };
        locations.push(location);
        return {
          ...withoutPayload(t),
          externalData: [
            location,
            { key: 'offset', value: String(offset) },
            { key: 'length', value: String(bytes.length) },
          ],
          dataLocation: DATA_LOCATION_EXTERNAL,
        };
      }
      if (isExternal(t)) return { ...withoutPayload(t), rawData: tensorRawBytes(t, reader) };
      return t;
    });
    if (dataTmp) {
      const location = cfg?.location ?? dataFileName(path.basename(out), hash.digest('hex').slice(0, DATA_HASH_HEX));
      for (const l of locations) l.value = location;
      dataPath = path.join(outDir, location);
      check(dataPath);
    }
    const parts = encodeParts('ModelProto', outModel);
    const size = partsLength(parts);
    if (size > MAX_PROTOBUF_BYTES) {
      throw new LrError('unsupported', `the model protobuf would be ${size} bytes, over the 2 GiB limit${cfg ? ' even with external data' : ' (use external data)'}`);
    }
    modelTmp = new TempFile(out, fsx);
    writeCoalesced(modelTmp, parts);
    modelTmp.finish();
    if (dataTmp && dataPath !== undefined) {
      // The data goes in place now, so that the temp model loads as OUT will. It keeps a
      // second link under a temp name until the model is in place: a data file with one
      // link that OUT does not name is an orphan (see removeUnusedData). A file of the same
      // (hashed) name holds the same bytes; it is kept as a backup until the commit.
      dataTmp.finish();
      const link = (from: string, to: string): boolean => {
        try {
          fsx.linkSync(from, to);
          untrack.push(removeOnInterrupt(to));
          return true;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT' && from === dataPath) return false;
          throw new LrError('io', `cannot write ${dataPath}: ${(e as Error).message}`);
        }
      };
      if (link(dataTmp.tmpPath, `${dataTmp.tmpPath}.keep`)) dataKeep = `${dataTmp.tmpPath}.keep`;
      if (link(dataPath, `${dataTmp.tmpPath}.bak`)) dataBackup = `${dataTmp.tmpPath}.bak`;
      else { dataCreated = true; untrack.push(removeOnInterrupt(dataPath)); }
      dataTmp.moveTo(dataPath);
      dataPlaced = true;
    }
  } catch (e) {
    discard();
    throw e;
  }

  const finalModel = modelTmp;
  const finalData = dataPath;
  const result: SaveResult = {
    path: out,
    bytes: finalModel.bytesWritten,
    externalTensors,
    ...(finalData !== undefined && dataTmp ? { externalPath: finalData, externalBytes: (dataTmp as TempFile).bytesWritten } : {}),
  };
  let done = false;
  return {
    result,
    tempPath: finalModel.tmpPath,
    commit(): void {
      if (done) return;
      // What the model being replaced refers to, to remove once nothing refers to it.
      const old = dataFilesOfExisting(out) ?? [];
      const oldKey = fileKey(out);
      finalModel.moveTo(out);
      done = true;
      release();
      removeUnusedData(old, { out, oldKey, newData: finalData, inputs, fsx });
    },
    discard(): void {
      if (!done) discard();
    },
  };
}

/**
 * After a commit, removes OUT's data files that nothing uses any more: those the replaced
 * OUT referred to, and orphans of writers killed before their commit (content-hashed
 * names with a single link: a writer in flight keeps a second one until its model is in
 * place; checked before reading what OUT names now, so a commit in between is seen).
 * Only names this module gives OUT's data are touched (another file may be shared with
 * other models); never the new data file, nor a file an input reads (unless that input
 * was the replaced OUT), nor a file replaced since it was looked at. Best effort: a file
 * left behind is only disk space.
 */
function removeUnusedData(old: readonly { file: string; key: string }[], c: { out: string; oldKey: string; newData?: string; inputs: readonly InputPath[]; fsx: FsLike }): void {
  const base = path.basename(c.out);
  const dir = path.dirname(c.out);
  const candidates = new Map(old.filter((o) => isOwnDataName(path.basename(o.file), base)).map((o) => [o.file, o.key]));
  let names: string[] = [];
  try { names = fs.readdirSync(dir); } catch { /* nothing more to find */ }
  for (const n of names) {
    if (n === `${base}.data` || !isOwnDataName(n, base)) continue;
    try {
      const st = fs.lstatSync(path.join(dir, n));
      if (st.isFile() && st.nlink === 1) candidates.set(path.join(dir, n), `inode:${st.dev}:${st.ino}`);
    } catch { /* gone */ }
  }
  if (candidates.size === 0) return;
  const named = dataFilesOfExisting(c.out);
  // An unreadable OUT leaves its references unknown: then only the replaced OUT's files go.
  const inUse = new Set((named ?? []).map((r) => r.key));
  if (c.newData !== undefined) inUse.add(fileKey(c.newData));
  // The input's files stay, unless the input was the model just replaced (in place, --force).
  if (!c.inputs.some((i) => i.isModel && fileKey(i.path) === c.oldKey)) for (const i of c.inputs) inUse.add(fileKey(i.path));
  const fromOld = new Set(old.map((o) => o.file));
  for (const [file, key] of candidates) {
    if (inUse.has(key) || (named === undefined && !fromOld.has(file)) || fileKey(file) !== key) continue;
    try { c.fsx.unlinkSync(file); } catch { /* gone */ }
  }
}

/**
 * Removes what writers of `outPath` that died (SIGKILL, OOM) left beside it: their temp
 * files and the data files they had put in place but not yet committed a model for. For
 * a supervisor whose worker was killed; a later save to `outPath` does the same.
 */
export function removeLeftovers(outPath: string): void {
  const out = path.resolve(outPath);
  removeStaleTemps(path.dirname(out));
  removeUnusedData([], { out, oldKey: '', inputs: [], fsx: nodeFs });
}
