/**
 * Saving .onnx files. Saving is atomic (temp + rename), streams external data tensor by
 * tensor into a file named by its content (so a model file only ever names the data
 * written with it), refuses outputs that are an input file, and never modifies its input.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LrError } from '../errors.js';
import { nodeFs } from '../util/fsio.js';
import { removeOnInterrupt, TempFile } from '../util/temp-files.js';
import { checkOutputs, fileKey, type OutputPath } from '../util/output-paths.js';
import { encodeAs, encodeParts, partsLength } from './codec.js';
import { dataFileName, dataFilesOfExisting, DATA_HASH_HEX, removeUnusedData } from './data-files.js';
import { checkLocation, ExternalDataReader } from './external.js';
import { MAX_PROTOBUF_BYTES, modelInputs } from './load.js';
import { AUTO_EXTERNAL_BYTES, DEFAULT_EXTERNAL_THRESHOLD, EXTERNAL_ALIGN, keptInline, type ModelSource, type SaveOptions, type SaveResult } from './save-options.js';
import { DATA_LOCATION_EXTERNAL, DataType, type ModelProto, type TensorProto } from './schema.js';
import { dataTypeBits, isExternal, tensorByteSize, tensorRawBytes } from './tensor.js';
import { forEachTensor, mapTensors } from './walk.js';

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

/** The model with its metadata_props replaced per opts.metadata and opts.dropMetadata (a shallow copy; `model` is untouched). */
function withMetadata(model: ModelProto, opts: SaveOptions): ModelProto {
  const add = Object.entries(opts.metadata ?? {});
  const drop = new Set([...opts.dropMetadata ?? [], ...add.map(([k]) => k)]);
  if (drop.size === 0) return model;
  return { ...model, metadataProps: [...(model.metadataProps ?? []).filter((e) => !drop.has(e.key ?? '')), ...add.map(([key, value]) => ({ key, value }))] };
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
/**
 * A save whose files are written but not yet in place: the model sits under a temp name
 * beside OUT, and its external data file already under its final (content-hashed) name,
 * so ORT can load `tempPath` as it will load OUT. commit() renames the model into place
 * and removes the data file the replaced OUT used; discard() undoes everything.
 */
export interface PreparedSave {
  readonly result: SaveResult;
  readonly tempPath: string;
  /**
   * Adds metadata_props entries to the written model before it is committed (e.g. a
   * verdict known only after the temp file was checked): appended as protobuf fields, so
   * the file is not rewritten. The keys should be ones the save dropped (dropMetadata).
   */
  appendMetadata(entries: Readonly<Record<string, string>>): void;
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
  const inputs = [...modelInputs({ path: 'path' in src ? src.path : undefined, dataFiles: 'dataFiles' in src ? src.dataFiles : undefined }), ...opts.alsoInputs ?? []];
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
    const parts = encodeParts('ModelProto', withMetadata(outModel, opts));
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
    appendMetadata(entries): void {
      if (done) throw new Error('appendMetadata after commit');
      // A message's fields may come in any order and repeated ones concatenate: the
      // entries appended after the graph parse as if written with the rest.
      const bytes = encodeAs('ModelProto', { metadataProps: Object.entries(entries).map(([key, value]) => ({ key, value })) });
      try {
        fs.appendFileSync(finalModel.tmpPath, bytes);
      } catch (e) {
        throw new LrError('io', `cannot write ${out}: ${(e as Error).message}`);
      }
      result.bytes += bytes.length;
    },
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
