/**
 * The external data files saveModel names for OUT (`<base>.<hash>.data`), and their clean-up:
 * files a replaced OUT used, and those writers killed before their commit left behind.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { nodeFs, readFileChunked, type FsLike } from '../util/fsio.js';
import { removeStaleTemps } from '../util/temp-files.js';
import { fileKey, type InputPath } from '../util/output-paths.js';
import { decodeModel } from './codec.js';
import { isExternal } from './tensor.js';
import { forEachTensor } from './walk.js';

/** Hex digits of the content hash in a default data file name (48 bits). */
export const DATA_HASH_HEX = 12;
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
/**
 * The plain-name external data files an existing model file refers to, with their identity
 * now (none when it does not exist); undefined when that is not known (not a readable
 * model, a link, or a large protobuf).
 * Large protobufs are skipped (a model with big external data has a small protobuf), and
 * so are links: the model a link or another hard link leads to stays, and still needs its data.
 */
export function dataFilesOfExisting(file: string): { file: string; key: string }[] | undefined {
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
 * After a commit, removes OUT's data files that nothing uses any more: those the replaced
 * OUT referred to, and orphans of writers killed before their commit (content-hashed
 * names with a single link: a writer in flight keeps a second one until its model is in
 * place; checked before reading what OUT names now, so a commit in between is seen).
 * Only names this module gives OUT's data are touched (another file may be shared with
 * other models); never the new data file, nor a file an input reads (unless that input
 * was the replaced OUT), nor a file replaced since it was looked at. Best effort: a file
 * left behind is only disk space.
 */
export function removeUnusedData(old: readonly { file: string; key: string }[], c: { out: string; oldKey: string; newData?: string; inputs: readonly InputPath[]; fsx: FsLike }): void {
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
