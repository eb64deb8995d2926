/**
 * Side inputs (calibration data, --input arrays, --verify-data, plans) are whatever the
 * user names: a FIFO (opening it blocks forever), a link to /dev/zero (a read that never
 * ends), a small file that declares a huge array. They are read only when they are regular
 * files, and every size they declare is checked against a bound before anything is
 * allocated for it.
 */
import * as fs from 'node:fs';
import { err, LrError, ok, type Result } from '../errors.js';
import { readFully } from './fsio.js';

/** Default bound on one side-input file, one decoded archive and one decoded image: 1 GiB. */
export const DEFAULT_MAX_INPUT_BYTES = 2 ** 30;
/** The option that raises the bound (its value is in MiB). */
export const MAX_INPUT_FLAG = '--max-input-mb';

/** "1024 MiB input limit (raise it with --max-input-mb)": the tail of every refusal. */
export function limitText(maxBytes: number): string {
  const size = maxBytes % 2 ** 20 === 0 ? `${maxBytes / 2 ** 20} MiB` : showBytes(maxBytes);
  return `${size} input limit (raise it with ${MAX_INPUT_FLAG})`;
}

/** A byte count for messages: "3.00 GiB", "17.5 MiB", "812 bytes". */
export function showBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${n} bytes`;
}

const errCode = (e: unknown): string => (e as NodeJS.ErrnoException | undefined)?.code ?? (e as Error).message;

/**
 * What a path is, following links: 'file' or 'dir', or an error for anything else
 * (FIFO, socket, device) or a path that cannot be read. `what` names the input in messages.
 */
export function sideInputKind(file: string, what: string): Result<'file' | 'dir'> {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    return err('io', `cannot read ${what} ${file}: ${errCode(e)}`);
  }
  if (st.isDirectory()) return ok('dir');
  if (!st.isFile()) return err('io', `${what} ${file} is not a regular file (a FIFO, device or socket cannot be read)`);
  return ok('file');
}

/**
 * Reads a whole regular file of at most `maxBytes` bytes. The type is checked before the
 * file is opened (opening a FIFO blocks), and again on the open descriptor, which is
 * opened non-blocking in case the path was swapped in between.
 */
export function readSideInput(file: string, what: string, maxBytes: number = DEFAULT_MAX_INPUT_BYTES): Result<Uint8Array> {
  const kind = sideInputKind(file, what);
  if (!kind.ok) return kind;
  if (kind.value === 'dir') return err('io', `${what} ${file} is a folder, not a file`);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    return err('io', `cannot read ${what} ${file}: ${errCode(e)}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return err('io', `${what} ${file} is not a regular file`);
    if (st.size > maxBytes) return err('unsupported', `${what} ${file} is ${showBytes(st.size)}, over the ${limitText(maxBytes)}`);
    const buf = new Uint8Array(st.size);
    readFully(fd, buf, 0, `${what} ${file}`);
    return ok(buf);
  } catch (e) {
    if (e instanceof LrError) return err(e.kind, e.message);
    return err('io', `cannot read ${what} ${file}: ${errCode(e)}`);
  } finally {
    fs.closeSync(fd);
  }
}
