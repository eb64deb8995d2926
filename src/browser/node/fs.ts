/**
 * node:fs in the browser build: the page works on bytes, so every file call is a bug that
 * should say so, not a silent no-op. Only the names the library imports exist.
 *
 * One exception, read-only: bytes the page registers under a path (`holdFile`) can be
 * stat'ed and read back, so library stages that reload their input by path (an error
 * budget restarts from the original model after each allocation, optimize/budget-run.ts)
 * read the dropped model. A file system is shared by nature: the table is the worker's.
 */
import { unavailable } from './unavailable.js';

const held = new Map<string, Uint8Array>();
const open = new Map<number, Uint8Array>();
let nextFd = 3;

/** Makes `bytes` readable at `path` (absolute) until the returned function is called. */
export function holdFile(path: string, bytes: Uint8Array): () => void {
  held.set(path, bytes);
  return () => { if (held.get(path) === bytes) held.delete(path); };
}

function noEntry(path: string): Error {
  return Object.assign(new Error(`ENOENT: no such file in the page: ${path}`), { code: 'ENOENT' });
}

function statOf(bytes: Uint8Array) {
  return { size: bytes.length, isFile: () => true, isDirectory: () => false, isFIFO: () => false, isSymbolicLink: () => false };
}

export const constants = { R_OK: 4, W_OK: 2, F_OK: 0, O_RDONLY: 0 };
export const accessSync = unavailable('fs.accessSync');
export const appendFileSync = unavailable('fs.appendFileSync');
export const existsSync = (path: string): boolean => held.has(path);
export const fsyncSync = unavailable('fs.fsyncSync');
export const linkSync = unavailable('fs.linkSync');
export const lstatSync = unavailable('fs.lstatSync');
export const mkdtempSync = unavailable('fs.mkdtempSync');
export const readdirSync = unavailable('fs.readdirSync');
export const realpathSync = unavailable('fs.realpathSync');
export const renameSync = unavailable('fs.renameSync');
export const rmSync = unavailable('fs.rmSync');
export const unlinkSync = unavailable('fs.unlinkSync');
export const writeFileSync = unavailable('fs.writeFileSync');
export const writeSync = unavailable('fs.writeSync');

export function statSync(path: string) {
  const b = held.get(path);
  if (!b) throw noEntry(path);
  return statOf(b);
}

export function openSync(path: string, flags = 'r'): number {
  if (flags !== 'r') throw new Error(`fs.openSync(${path}, '${flags}') is not available in the browser (the page only reads the files it holds)`);
  const b = held.get(path);
  if (!b) throw noEntry(path);
  const fd = nextFd++;
  open.set(fd, b);
  return fd;
}

function file(fd: number): Uint8Array {
  const b = open.get(fd);
  if (!b) throw Object.assign(new Error(`EBADF: bad file descriptor ${fd}`), { code: 'EBADF' });
  return b;
}

export const fstatSync = (fd: number) => statOf(file(fd));
export const closeSync = (fd: number): void => { open.delete(fd); };

export function readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number | null): number {
  const b = file(fd);
  const at = position ?? 0;
  const n = Math.max(0, Math.min(length, b.length - at));
  buffer.set(b.subarray(at, at + n), offset);
  return n;
}

export function readFileSync(path: string): Uint8Array {
  const b = held.get(path);
  if (!b) throw noEntry(path);
  return b.slice();
}
