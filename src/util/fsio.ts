/**
 * File I/O in bounded chunks (fs.readFileSync/writeFileSync fail past 2 GiB); atomic writes
 * are in temp-files.ts. Every function takes an optional fs-like object so tests can inject
 * failures (a full disk) without global state.
 */
import * as fs from 'node:fs';
import { LrError } from '../errors.js';

/** The subset of node:fs used here; swap members to simulate failures. */
export interface FsLike {
  openSync(path: string, flags: string, mode?: number): number;
  closeSync(fd: number): void;
  readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number | null): number;
  writeSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number | null): number;
  fstatSync(fd: number): fs.Stats;
  fsyncSync(fd: number): void;
  renameSync(from: string, to: string): void;
  unlinkSync(path: string): void;
  linkSync(existing: string, newPath: string): void;
}

export const nodeFs: FsLike = {
  openSync: (p, flags, mode) => fs.openSync(p, flags, mode),
  closeSync: (fd) => fs.closeSync(fd),
  readSync: (fd, b, o, l, pos) => fs.readSync(fd, b, o, l, pos),
  writeSync: (fd, b, o, l, pos) => fs.writeSync(fd, b, o, l, pos),
  fstatSync: (fd) => fs.fstatSync(fd),
  fsyncSync: (fd) => fs.fsyncSync(fd),
  renameSync: (a, b) => fs.renameSync(a, b),
  unlinkSync: (p) => fs.unlinkSync(p),
  linkSync: (a, b) => fs.linkSync(a, b),
};

/** Largest single read/write request (well under the 2 GiB per-call limit). */
export const IO_CHUNK = 64 * 1024 * 1024;

export const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
export const errCode = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;

/** Fills `dst` from `fd` starting at byte `position`; a short file is an 'io' error. */
export function readFully(fd: number, dst: Uint8Array, position: number, what: string, fsx: FsLike = nodeFs): void {
  let done = 0;
  while (done < dst.length) {
    const n = fsx.readSync(fd, dst, done, Math.min(IO_CHUNK, dst.length - done), position + done);
    if (n <= 0) throw new LrError('io', `${what}: unexpected end of file after ${position + done} bytes`);
    done += n;
  }
}

/** Writes all of `data` at the fd's current position, in chunks, retrying short writes. */
export function writeFully(fd: number, data: Uint8Array, fsx: FsLike = nodeFs): void {
  let done = 0;
  while (done < data.length) {
    const n = fsx.writeSync(fd, data, done, Math.min(IO_CHUNK, data.length - done), null);
    if (n <= 0) throw new Error(`write returned ${n}`);
    done += n;
  }
}

/**
 * Reads a whole regular file. `maxBytes` is checked against the size before allocating.
 * Errors: missing file / directory / unreadable → 'io'; too large → 'unsupported'.
 */
export function readFileChunked(file: string, opts: { maxBytes?: number; fs?: FsLike } = {}): Uint8Array {
  const fsx = opts.fs ?? nodeFs;
  let fd: number;
  try {
    fd = fsx.openSync(file, 'r');
  } catch (e) {
    const code = errCode(e);
    if (code === 'ENOENT') throw new LrError('io', `no such file: ${file}`);
    if (code === 'EISDIR') throw new LrError('io', `${file} is a directory, not a file`);
    throw new LrError('io', `cannot open ${file}: ${errText(e)}`);
  }
  try {
    const st = fsx.fstatSync(fd);
    if (st.isDirectory()) throw new LrError('io', `${file} is a directory, not a file`);
    if (!st.isFile()) throw new LrError('io', `${file} is not a regular file`);
    const max = opts.maxBytes ?? Number.MAX_SAFE_INTEGER;
    if (st.size > max) throw new LrError('unsupported', `${file} is ${st.size} bytes, over the ${max}-byte limit`);
    const buf = new Uint8Array(st.size);
    readFully(fd, buf, 0, file, fsx);
    return buf;
  } catch (e) {
    if (e instanceof LrError) throw e;
    throw new LrError('io', `cannot read ${file}: ${errText(e)}`);
  } finally {
    fsx.closeSync(fd);
  }
}
