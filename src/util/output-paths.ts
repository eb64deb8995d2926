/**
 * Checks, before anything is written, that the files a command writes can neither destroy
 * its input nor each other: every output is compared with every input file (the model and
 * each external data file it reads) and with the other outputs by (device, inode) after
 * following links, so an alias, a `..` detour or a hard link is caught like the same
 * name. Outputs must be regular files or absent: renaming a temp over a device, a FIFO
 * or a link to one (`/dev/null`, `/proc/self/fd/1`) would replace it with a plain file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LrError } from '../errors.js';

export interface OutputPath {
  path: string;
  /** How messages name it: `OUT`, `--report`, `OUT's external data file`. */
  label: string;
  /**
   * What this output may replace when `force` is given: 'model' (OUT over IN, as asked),
   * 'any' (also IN's data files: OUT's data file when OUT is IN). Default: nothing.
   */
  mayReplace?: 'model' | 'any';
}

export interface InputPath {
  path: string;
  /** How messages name it: `the input`, `the input's external data file`. */
  label: string;
  /** The model file itself (not one of its data files). */
  isModel?: boolean;
}

const code = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;

/** What a non-regular file is, for messages. */
function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Identity of a path for comparison: (device, inode) of what it resolves to, or, when it
 * does not exist yet, its absolute path with the folder's links resolved.
 */
export function fileKey(p: string): string {
  try {
    const st = fs.statSync(p);
    return `inode:${st.dev}:${st.ino}`;
  } catch {
    const abs = path.resolve(p);
    let dir = path.dirname(abs);
    try { dir = fs.realpathSync(dir); } catch { /* a missing folder is reported elsewhere */ }
    return `path:${path.join(dir, path.basename(abs))}`;
  }
}

/**
 * Refuses (LrError) an output that is not a regular file or absent. A link to a regular
 * file is allowed (the link is replaced; its target is left as it is), and so is a
 * dangling one; a link to anything else is refused. A missing folder is an 'io' error.
 */
export function checkOutputFile(p: string, label: string): void {
  const shown = `${label} ${p}`;
  let lst: fs.Stats;
  try {
    lst = fs.lstatSync(p);
  } catch (e) {
    if (code(e) === 'ENOENT' || code(e) === 'ENOTDIR') {
      const dir = path.dirname(path.resolve(p));
      let dst: fs.Stats | undefined;
      try { dst = fs.statSync(dir); } catch { /* missing */ }
      if (!dst) throw new LrError('io', `cannot write ${shown}: no such folder ${dir}`);
      if (!dst.isDirectory()) throw new LrError('io', `cannot write ${shown}: ${dir} is not a folder`);
      return;
    }
    throw new LrError('io', `cannot write ${shown}: ${(e as Error).message}`);
  }
  if (lst.isFile()) return;
  if (lst.isDirectory()) throw new LrError('io', `${shown} is a directory`);
  if (lst.isSymbolicLink()) {
    let st: fs.Stats;
    try { st = fs.statSync(p); } catch { return; } // dangling: the link itself is replaced
    if (st.isFile()) return;
    throw new LrError('usage', `${shown} is a link to ${kindOf(st)}, not a regular file: refusing to replace it`);
  }
  throw new LrError('usage', `${shown} is ${kindOf(lst)}, not a regular file: refusing to replace it`);
}

/**
 * Checks a command's outputs against its inputs and each other (see the file comment).
 * An output that is an input is refused unless `force` and the output allows it; two
 * outputs that are one file are always refused. Errors are 'usage' (exit 2), nothing
 * having been written.
 */
export function checkOutputs(outputs: readonly OutputPath[], inputs: readonly InputPath[], opts: { force?: boolean } = {}): void {
  for (const o of outputs) checkOutputFile(o.path, o.label);
  const inputKeys = new Map<string, InputPath>();
  for (const i of inputs) if (!inputKeys.has(fileKey(i.path))) inputKeys.set(fileKey(i.path), i);
  const seen = new Map<string, OutputPath>();
  for (const o of outputs) {
    const key = fileKey(o.path);
    const other = seen.get(key);
    if (other) throw new LrError('usage', `${o.label} ${o.path} is the same file as ${other.label} ${other.path}`);
    seen.set(key, o);
    const input = inputKeys.get(key);
    if (!input) continue;
    const allowed = o.mayReplace === 'any' || (o.mayReplace === 'model' && input.isModel === true);
    if (allowed && opts.force) continue;
    if (allowed) throw new LrError('usage', `refusing to overwrite the input file ${o.path} (use --force to allow it)`);
    const same = path.resolve(input.path) === path.resolve(o.path) ? '' : ` ${input.path}`;
    throw new LrError('usage', `${o.label} ${o.path} is ${input.label}${same}: refusing to overwrite it`);
  }
}
