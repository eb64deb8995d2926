/**
 * NumPy .npz reading and writing: a zip of `<name>.npy` entries (npy.ts). We read the
 * central directory (the local headers written by numpy carry Zip64 placeholder sizes, so
 * only the central directory is trustworthy), support stored and deflate entries, and
 * check CRC-32. Files are read only when regular, and sizes they declare are bounded
 * before allocation (util/bounds.ts).
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { err, ok, type Result } from '../errors.js';
import { DEFAULT_MAX_INPUT_BYTES, limitText, readSideInput, showBytes } from '../util/bounds.js';
import { encodeNpy, parseNpy, writeBytes, type NpyArray } from './npy.js';

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOC = 0x07064b50;
const SIG_CDIR = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

export interface NpzOptions {
  /** Bound on the archive's decoded bytes (all entries), checked before inflating; default 1 GiB. */
  maxBytes?: number;
}

/**
 * Parses .npz bytes into arrays keyed by entry name without the `.npy` suffix. Every offset
 * and length the archive declares is checked against the bytes before it is used, and the
 * declared uncompressed sizes against `maxBytes` before anything is inflated; inflating
 * stops at the declared size (a deflate stream may expand a thousandfold).
 */
export function parseNpz(bytes: Uint8Array, label = '<npz>', opts: NpzOptions = {}): Result<Map<string, NpyArray>> {
  const fail = (msg: string) => err('parse', `${label}: ${msg}`);
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_INPUT_BYTES;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = bytes.length;
  // The end-of-central-directory record sits within the last 22 + 65535 (comment) bytes.
  let eocd = -1;
  for (let p = len - 22; p >= Math.max(0, len - 22 - 0xffff); p--) {
    if (view.getUint32(p, true) === SIG_EOCD) { eocd = p; break; }
  }
  if (eocd < 0) return fail('not a zip/.npz file (no end of central directory)');
  let entries = view.getUint16(eocd + 10, true);
  let cdOffset = view.getUint32(eocd + 16, true);
  if ((entries === 0xffff || cdOffset === 0xffffffff) && eocd >= 20 && view.getUint32(eocd - 20, true) === SIG_EOCD64_LOC) {
    const rec = Number(view.getBigUint64(eocd - 20 + 8, true));
    if (rec + 56 > len || view.getUint32(rec, true) !== SIG_EOCD64) return fail('bad Zip64 end record');
    entries = Number(view.getBigUint64(rec + 32, true));
    cdOffset = Number(view.getBigUint64(rec + 48, true));
  }
  const out = new Map<string, NpyArray>();
  let decoded = 0;
  let p = cdOffset;
  for (let e = 0; e < entries; e++) {
    if (p + 46 > len || view.getUint32(p, true) !== SIG_CDIR) return fail('corrupt central directory');
    const flags = view.getUint16(p + 8, true);
    const method = view.getUint16(p + 10, true);
    const crc = view.getUint32(p + 16, true);
    let csize = view.getUint32(p + 20, true);
    let usize = view.getUint32(p + 24, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    let local = view.getUint32(p + 42, true);
    const extraEnd = p + 46 + nameLen + extraLen;
    if (extraEnd + commentLen > len) return fail(`central directory entry ${e + 1} runs past the end of the file`);
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLen));
    // Zip64 extra field (id 1): present values replace the 0xffffffff placeholders, in this order.
    for (let x = p + 46 + nameLen; x + 4 <= extraEnd;) {
      const id = view.getUint16(x, true);
      const fieldEnd = x + 4 + view.getUint16(x + 2, true);
      if (fieldEnd > extraEnd) return fail(`entry ${name}: extra field runs past its entry`);
      if (id === 1) {
        let q = x + 4;
        const next = (): number | undefined => {
          if (q + 8 > fieldEnd) return undefined;
          const v = Number(view.getBigUint64(q, true));
          q += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = next() ?? -1;
        if (csize === 0xffffffff) csize = next() ?? -1;
        if (local === 0xffffffff) local = next() ?? -1;
        if (usize < 0 || csize < 0 || local < 0) return fail(`entry ${name}: Zip64 extra field is too short`);
      }
      x = fieldEnd;
    }
    p = extraEnd + commentLen;
    if (flags & 1) return fail(`entry ${name} is encrypted`);
    if (local + 30 > len || view.getUint32(local, true) !== SIG_LOCAL) return fail(`entry ${name}: bad local header`);
    const dataStart = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    if (dataStart + csize > len) return fail(`entry ${name}: truncated`);
    // Refuse on the declared size, before a byte is inflated.
    if (usize > maxBytes - decoded) {
      return err('unsupported', `${label}: entry ${name} declares ${showBytes(usize)} uncompressed${decoded > 0 ? ` (after ${showBytes(decoded)} in earlier entries)` : ''}, over the ${limitText(maxBytes)}`);
    }
    decoded += usize;
    const comp = bytes.subarray(dataStart, dataStart + csize);
    let raw: Uint8Array;
    if (method === 0) raw = comp;
    else if (method === 8) {
      try {
        raw = inflateRawSync(comp, { maxOutputLength: Math.max(usize, 1) });
      } catch (x) {
        const code = (x as NodeJS.ErrnoException).code;
        if (code === 'ERR_BUFFER_TOO_LARGE') return fail(`entry ${name} inflates past its declared size of ${usize} bytes`);
        return fail(`entry ${name}: ${(x as Error).message}`);
      }
    } else return fail(`entry ${name}: unsupported compression method ${method} (only stored and deflate)`);
    if (raw.length !== usize) return fail(`entry ${name}: size ${raw.length} != ${usize}`);
    if (crc32(raw) !== crc) return fail(`entry ${name}: CRC mismatch`);
    const arr = parseNpy(raw, `${label}:${name}`);
    if (!arr.ok) return arr;
    out.set(name.endsWith('.npy') ? name.slice(0, -4) : name, arr.value);
  }
  return ok(out);
}

/** Encodes arrays as .npz; `compress` uses deflate (np.savez_compressed), otherwise stored (np.savez). */
export function encodeNpz(arrays: Record<string, NpyArray> | Map<string, NpyArray>, opts: { compress?: boolean } = {}): Uint8Array {
  const list = arrays instanceof Map ? [...arrays] : Object.entries(arrays);
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const [key, arr] of list) {
    const name = new TextEncoder().encode(`${key}.npy`);
    const raw = encodeNpy(arr);
    const data = opts.compress ? deflateRawSync(raw) : raw;
    const crc = crc32(raw);
    if (offset + 30 + name.length + data.length > 0xffffffff) throw new Error('encodeNpz: archives over 4 GiB are not supported');
    const method = opts.compress ? 8 : 0;
    const lh = new Uint8Array(30 + name.length);
    const lv = new DataView(lh.buffer);
    lv.setUint32(0, SIG_LOCAL, true); lv.setUint16(4, 20, true); lv.setUint16(8, method, true);
    lv.setUint16(12, 0x21, true); // DOS date 1980-01-01: fixed so output bytes are deterministic
    lv.setUint32(14, crc, true); lv.setUint32(18, data.length, true); lv.setUint32(22, raw.length, true);
    lv.setUint16(26, name.length, true); lh.set(name, 30);
    const ch = new Uint8Array(46 + name.length);
    const cv = new DataView(ch.buffer);
    cv.setUint32(0, SIG_CDIR, true); cv.setUint16(4, 20, true); cv.setUint16(6, 20, true); cv.setUint16(10, method, true);
    cv.setUint16(14, 0x21, true);
    cv.setUint32(16, crc, true); cv.setUint32(20, data.length, true); cv.setUint32(24, raw.length, true);
    cv.setUint16(28, name.length, true); cv.setUint32(42, offset, true); ch.set(name, 46);
    locals.push(lh, data);
    centrals.push(ch);
    offset += lh.length + data.length;
  }
  const cdSize = centrals.reduce((a, c) => a + c.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, SIG_EOCD, true); ev.setUint16(8, list.length, true); ev.setUint16(10, list.length, true);
  ev.setUint32(12, cdSize, true); ev.setUint32(16, offset, true);
  return concat([...locals, ...centrals, end]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

let crcTable: Uint32Array | undefined;

export function crc32(b: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = crcTable[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Reads a .npz file: a regular file of at most `maxBytes`, decoding to at most as many bytes. */
export function readNpz(path: string, opts: NpzOptions = {}): Result<Map<string, NpyArray>> {
  const b = readSideInput(path, 'array file', opts.maxBytes);
  return b.ok ? parseNpz(b.value, path, opts) : b;
}

export function writeNpz(path: string, arrays: Record<string, NpyArray> | Map<string, NpyArray>, opts: { compress?: boolean } = {}): Result<void> {
  return writeBytes(path, encodeNpz(arrays, opts));
}
