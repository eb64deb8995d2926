/**
 * External tensor data (data_location = EXTERNAL): `external_data` entries `location`,
 * `offset`, `length` (`checksum` is ignored). A location names a file relative to the
 * model's folder and must stay inside it: absolute paths, `..` escapes and symlinks that
 * resolve outside are refused, since a model file is untrusted input.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LrError } from '../errors.js';
import { readFully, nodeFs, type FsLike } from '../util/fsio.js';
import { DataType, type TensorProto } from './schema.js';
import { isExternal, rawByteLength, tensorElementCount, type ExternalBytes } from './tensor.js';

/** Reads the payload of external tensors. */
export interface ExternalReader extends ExternalBytes {
  readBytes(t: TensorProto): Uint8Array;
  /** Releases cached file descriptors; the reader stays usable (it reopens on demand). */
  close(): void;
}

/** An external reference after validation: an absolute resolved path and a byte range. */
export interface ExternalRef {
  tensor: string;
  location: string;
  file: string;
  offset: number;
  length: number;
}

const label = (t: TensorProto): string => `tensor "${t.name ?? '(unnamed)'}"`;

/** The entries of a tensor's external_data as a map (later duplicates win, as in ORT). */
export function externalEntries(t: TensorProto): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of t.externalData) if (e.key !== undefined) m.set(e.key, e.value ?? '');
  return m;
}

function parseOffset(t: TensorProto, key: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = /^[0-9]+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new LrError('parse', `${label(t)}: external data ${key} "${v}" is not a valid byte count`);
  return n;
}

/**
 * Checks a location string alone (no file system access) and returns it normalised to
 * forward slashes. Refuses empty, absolute (POSIX or Windows style), NUL, and `..` escapes.
 */
export function checkLocation(location: string, what: string): string {
  const bad = (why: string): never => { throw new LrError('io', `${what}: external data location "${location}" ${why}`); };
  if (location === '') bad('is empty');
  if (location.includes('\0')) bad('contains a NUL byte');
  // Windows writers may use backslashes; treat them as separators so `..\x` is caught too.
  const slashed = location.replace(/\\/g, '/');
  if (slashed.startsWith('/') || /^[A-Za-z]:/.test(slashed) || path.isAbsolute(location)) bad('is an absolute path');
  const norm = path.posix.normalize(slashed);
  if (norm === '..' || norm.startsWith('../')) bad('escapes the model folder');
  if (norm === '.' || norm.endsWith('/')) bad('is not a file name');
  return norm;
}

/** External data reader bound to a model folder; caches one fd per data file. */
export class ExternalDataReader implements ExternalReader {
  private readonly open = new Map<string, { fd: number; size: number }>();
  private realDir: string | undefined;

  constructor(readonly dir: string, private readonly fsx: FsLike = nodeFs) {}

  /** Validates location, file and byte range of an external tensor without reading the payload. */
  resolve(t: TensorProto): ExternalRef {
    const what = label(t);
    if (!isExternal(t)) throw new LrError('usage', `${what} does not use external data`);
    const entries = externalEntries(t);
    const location = entries.get('location');
    if (location === undefined) throw new LrError('parse', `${what}: external data has no location`);
    const norm = checkLocation(location, what);
    const dt = t.dataType ?? DataType.UNDEFINED;
    if (dt === DataType.STRING) throw new LrError('unsupported', `${what}: STRING tensors cannot use external data`);
    const expected = rawByteLength(dt, tensorElementCount(t.dims, what));
    const offset = parseOffset(t, 'offset', entries.get('offset')) ?? 0;
    const length = parseOffset(t, 'length', entries.get('length')) ?? expected;
    if (length !== expected) {
      throw new LrError('parse', `${what}: external data length ${length} disagrees with dims [${t.dims.join(', ')}] (${expected} bytes)`);
    }
    const file = this.resolvePath(norm, location, what);
    const { size } = this.handle(file, location, what);
    if (offset + length > size) {
      throw new LrError('parse', `${what}: external data range ${offset}+${length} runs past the end of "${location}" (${size} bytes)`);
    }
    return { tensor: t.name ?? '', location, file, offset, length };
  }

  readBytes(t: TensorProto): Uint8Array {
    const ref = this.resolve(t);
    const out = new Uint8Array(ref.length);
    readFully(this.handle(ref.file, ref.location, label(t)).fd, out, ref.offset, `external data "${ref.location}" of ${label(t)}`, this.fsx);
    return out;
  }

  close(): void {
    for (const { fd } of this.open.values()) {
      try { this.fsx.closeSync(fd); } catch { /* already closed */ }
    }
    this.open.clear();
  }

  private resolvePath(norm: string, location: string, what: string): string {
    this.realDir ??= fs.realpathSync(this.dir);
    const joined = path.join(this.realDir, norm);
    let real: string;
    try {
      real = fs.realpathSync(joined);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new LrError('io', `${what}: external data file "${location}" does not exist in ${this.dir}`);
      throw new LrError('io', `${what}: cannot resolve external data file "${location}": ${(e as Error).message}`);
    }
    const rel = path.relative(this.realDir, real);
    if (rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
      throw new LrError('io', `${what}: external data location "${location}" resolves outside the model folder (${real})`);
    }
    return real;
  }

  private handle(file: string, location: string, what: string): { fd: number; size: number } {
    let h = this.open.get(file);
    if (h) return h;
    // stat before open: opening a FIFO (or a device) for reading can block forever.
    let pre: fs.Stats;
    try {
      pre = fs.statSync(file);
    } catch (e) {
      throw new LrError('io', `${what}: cannot open external data file "${location}": ${(e as Error).message}`);
    }
    if (!pre.isFile()) throw new LrError('io', `${what}: external data location "${location}" is not a regular file`);
    let fd: number;
    try {
      fd = this.fsx.openSync(file, 'r');
    } catch (e) {
      throw new LrError('io', `${what}: cannot open external data file "${location}": ${(e as Error).message}`);
    }
    const st = this.fsx.fstatSync(fd);
    if (!st.isFile()) {
      this.fsx.closeSync(fd);
      throw new LrError('io', `${what}: external data location "${location}" is not a regular file`);
    }
    h = { fd, size: st.size };
    this.open.set(file, h);
    return h;
  }
}
