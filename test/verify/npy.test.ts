import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { encodeNpy, parseNpy, readNpy, writeNpy, type NpyArray } from '../../src/io/npy.js';
import { crc32, encodeNpz, parseNpz, readNpz, writeNpz } from '../../src/io/npz.js';

/** Builds .npy bytes by hand from the spec: magic, version, header length, header, data. */
function handNpy(major: number, header: string, data: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(header);
  const lenBytes = major === 1 ? 2 : 4;
  const out = new Uint8Array(8 + lenBytes + h.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0]);
  const v = new DataView(out.buffer);
  if (major === 1) v.setUint16(8, h.length, true); else v.setUint32(8, h.length, true);
  out.set(h, 8 + lenBytes);
  out.set(data, 8 + lenBytes + h.length);
  return out;
}

const f32bytes = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);

// np.save(b, np.arange(6, dtype='<f4').reshape(2, 3) * 0.5) with numpy 1.24.
const NUMPY_F4_2x3 =
  '934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c2033292c207d' +
  '20'.repeat(58) + '0a' + '000000000000003f0000803f0000c03f0000004000002040';

// np.savez_compressed(b, x=<same>, sr=np.array(16000, np.int64), m=np.array([True, False, True])):
// deflate entries with Zip64 placeholder sizes in the local headers.
const NUMPY_NPZ_COMPRESSED =
  'UEsDBC0AAAAIAAAAIQALwLB2//////////8FABQAeC5ucHkBABAAmAAAAAAAAABXAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG6TZqKuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GkY6CsaaOgq1CmQDLgYIsGdgaADiA0DM4MDAoOAAAFBLAwQtAAAACAAAACEA7+pSzf//////////BgAUAHNyLm5weQEAEACIAAAAAAAAAEcAAAAAAAAAm+wX6hsQychQxlCtnpJanFykbqWgbpNpoa6joJ6WX1RSlJgXn1+UkgoSd0vMKU4FihdnJBakAvkamjoKtQoUAa4GOwYwAABQSwMELQAAAAgAAAAhABaTjLv//////////wUAFABtLm5weQEAEACDAAAAAAAAAEcAAAAAAAAAm+wX6hsQychQxlCtnpJanFykbqWgXpNkqK6joJ6WX1RSlJgXn1+UkgoSd0vMKU4FihdnJBakAvkaxjqaOgq1ChQALkYGRgBQSwECLQMtAAAACAAAACEAC8CwdlcAAACYAAAABQAAAAAAAAAAAAAAgAEAAAAAeC5ucHlQSwECLQMtAAAACAAAACEA7+pSzUcAAACIAAAABgAAAAAAAAAAAAAAgAGOAAAAc3IubnB5UEsBAi0DLQAAAAgAAAAhABaTjLtHAAAAgwAAAAUAAAAAAAAAAAAAAIABDQEAAG0ubnB5UEsFBgAAAAADAAMAmgAAAIsBAAAAAA==';

describe('npy', () => {
  it('reads a v1 header built by hand per the spec', () => {
    const r = parseNpy(handNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }    \n", f32bytes([1, 2, 3, 4, 5, 6])));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.dtype).toBe('f4');
    expect(r.value.shape).toEqual([2, 3]);
    expect([...r.value.data]).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('reads v2 and v3 headers, double-quoted keys, 1-tuples and scalars', () => {
    const v2 = parseNpy(handNpy(2, '{"descr": "<i8", "fortran_order": False, "shape": (3,)}\n', new Uint8Array(new BigInt64Array([1n, -2n, 3n]).buffer)));
    expect(v2.ok && [...v2.value.data]).toEqual([1n, -2n, 3n]);
    expect(v2.ok && v2.value.shape).toEqual([3]);
    const v3 = parseNpy(handNpy(3, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }\n", new Uint8Array(new Float64Array([16000]).buffer)));
    expect(v3.ok && v3.value.shape).toEqual([]);
    expect(v3.ok && [...v3.value.data]).toEqual([16000]);
  });

  it('byte-swaps big-endian data', () => {
    const be = new Uint8Array([0, 0, 0x3e, 0x80, 0xff, 0xff, 0xff, 0xfe]); // 16000, -2 as >i4
    const r = parseNpy(handNpy(1, "{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }\n", be));
    expect(r.ok && [...r.value.data]).toEqual([16000, -2]);
  });

  it('reads bytes written by numpy and writes the same bytes back', () => {
    const bytes = Uint8Array.from(Buffer.from(NUMPY_F4_2x3, 'hex'));
    const r = parseNpy(bytes);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.shape).toEqual([2, 3]);
    expect([...r.value.data]).toEqual([0, 0.5, 1, 1.5, 2, 2.5]);
    expect(Buffer.from(encodeNpy(r.value)).toString('hex')).toBe(NUMPY_F4_2x3);
  });

  it('round-trips every dtype, including scalars and empty arrays', () => {
    const cases: NpyArray[] = [
      { dtype: 'f4', shape: [2, 2], data: new Float32Array([1.5, -2, 3, Infinity]) },
      { dtype: 'f8', shape: [3], data: new Float64Array([Math.PI, -0, 1e-300]) },
      { dtype: 'f2', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) },
      { dtype: 'i1', shape: [2], data: new Int8Array([-128, 127]) },
      { dtype: 'i2', shape: [1, 2], data: new Int16Array([-300, 300]) },
      { dtype: 'i4', shape: [], data: new Int32Array([7]) },
      { dtype: 'i8', shape: [2], data: new BigInt64Array([-(2n ** 62n), 16000n]) },
      { dtype: 'u1', shape: [0, 4], data: new Uint8Array(0) },
      { dtype: 'u2', shape: [1], data: new Uint16Array([65535]) },
      { dtype: 'u4', shape: [1], data: new Uint32Array([4e9]) },
      { dtype: 'u8', shape: [1], data: new BigUint64Array([2n ** 64n - 1n]) },
      { dtype: 'b1', shape: [3], data: new Uint8Array([1, 0, 1]) },
    ];
    for (const a of cases) {
      const bytes = encodeNpy(a);
      const headerEnd = bytes.length - a.data.byteLength;
      expect(headerEnd % 64, a.dtype).toBe(0); // numpy's alignment
      expect(bytes[headerEnd - 1]).toBe(0x0a);
      const r = parseNpy(bytes);
      expect(r.ok, a.dtype).toBe(true);
      if (!r.ok) continue;
      expect(r.value.dtype).toBe(a.dtype);
      expect(r.value.shape).toEqual(a.shape);
      expect(r.value.data.constructor).toBe(a.data.constructor);
      expect([...r.value.data]).toEqual([...a.data]);
    }
  });

  it('refuses bad files with a message naming the file', () => {
    const cases: [Uint8Array, RegExp][] = [
      [new TextEncoder().encode('PK not numpy at all'), /bad magic/],
      [handNpy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n", f32bytes([1, 2, 3, 4, 5, 6])), /fortran_order/],
      [handNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", f32bytes([1, 2])), /truncated data/],
      [handNpy(1, "{'descr': '<U5', 'fortran_order': False, 'shape': (1,), }\n", new Uint8Array(20)), /unsupported dtype '<U5'/],
      [handNpy(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n", new Uint8Array(4)), /structured/],
      [handNpy(1, "{'descr': '<f4', 'shape': (1,), }\n", new Uint8Array(4)), /fortran_order/],
      [handNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)\n", new Uint8Array(4)), /bad .npy header/],
      [handNpy(7, '{}', new Uint8Array(0)), /version 7/],
    ];
    for (const [bytes, re] of cases) {
      const r = parseNpy(bytes, 'in.npy');
      expect(r.ok).toBe(false);
      if (r.ok) continue;
      expect(r.error.kind).toBe('parse');
      expect(r.error.message).toMatch(/^in\.npy: /);
      expect(r.error.message).toMatch(re);
    }
  });

  it('accepts fortran_order True for 1-D data, where it is the same layout', () => {
    const r = parseNpy(handNpy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }\n", f32bytes([1, 2])));
    expect(r.ok && [...r.value.data]).toEqual([1, 2]);
  });

  it('reads and writes files; a missing file is an io error naming it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'npy-'));
    const p = join(dir, 'a.npy');
    expect(writeNpy(p, { dtype: 'i8', shape: [], data: new BigInt64Array([16000n]) }).ok).toBe(true);
    const r = readNpy(p);
    expect(r.ok && r.value.data[0]).toBe(16000n);
    const missing = readNpy(join(dir, 'nope.npy'));
    expect(!missing.ok && missing.error.kind).toBe('io');
    expect(!missing.ok && missing.error.message).toContain('nope.npy');
  });
});

describe('npz', () => {
  it('reads an npz written by numpy.savez_compressed (deflate, Zip64 local headers)', () => {
    const r = parseNpz(Uint8Array.from(Buffer.from(NUMPY_NPZ_COMPRESSED, 'base64')));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect([...r.value.keys()]).toEqual(['x', 'sr', 'm']);
    expect([...r.value.get('x')!.data]).toEqual([0, 0.5, 1, 1.5, 2, 2.5]);
    expect(r.value.get('sr')).toEqual({ dtype: 'i8', shape: [], data: new BigInt64Array([16000n]) });
    expect(r.value.get('m')!.dtype).toBe('b1');
    expect([...r.value.get('m')!.data]).toEqual([1, 0, 1]);
  });

  it('reads a deflate zip assembled by hand with zlib', () => {
    const npy = encodeNpy({ dtype: 'f4', shape: [2], data: new Float32Array([3, 4]) });
    const comp = deflateRawSync(npy);
    const name = new TextEncoder().encode('w.npy');
    const local = new Uint8Array(30 + name.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true); lv.setUint16(8, 8, true); lv.setUint16(26, name.length, true);
    local.set(name, 30);
    const central = new Uint8Array(46 + name.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true); cv.setUint16(10, 8, true); cv.setUint32(16, crc32(npy), true);
    cv.setUint32(20, comp.length, true); cv.setUint32(24, npy.length, true); cv.setUint16(28, name.length, true);
    cv.setUint32(42, 0, true); central.set(name, 46);
    const end = new Uint8Array(22);
    const ev = new DataView(end.buffer);
    ev.setUint32(0, 0x06054b50, true); ev.setUint16(8, 1, true); ev.setUint16(10, 1, true);
    ev.setUint32(12, central.length, true); ev.setUint32(16, local.length + comp.length, true);
    const zip = Buffer.concat([local, comp, central, end]);
    const r = parseNpz(zip);
    expect(r.ok && [...r.value.get('w')!.data]).toEqual([3, 4]);

    // Flip a byte of the stored CRC: the reader must notice.
    const bad = Uint8Array.from(zip);
    bad[local.length + comp.length + 16]! ^= 0xff;
    const rb = parseNpz(bad, 'bad.npz');
    expect(!rb.ok && rb.error.message).toMatch(/^bad\.npz: entry w\.npy: CRC mismatch/);
  });

  it('round-trips stored and compressed archives through files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'npz-'));
    const arrays = {
      a: { dtype: 'f4', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) } as NpyArray,
      idx: { dtype: 'i4', shape: [3], data: new Int32Array([0, -1, 2]) } as NpyArray,
    };
    for (const compress of [false, true]) {
      const p = join(dir, `t${compress}.npz`);
      expect(writeNpz(p, arrays, { compress }).ok).toBe(true);
      const r = readNpz(p);
      expect(r.ok).toBe(true);
      if (!r.ok) continue;
      expect(r.value.get('a')).toEqual(arrays.a);
      expect(r.value.get('idx')).toEqual(arrays.idx);
    }
    // Deterministic bytes (fixed timestamps), smaller when compressed on redundant data.
    const big = { z: { dtype: 'f4', shape: [1000], data: new Float32Array(1000) } as NpyArray };
    expect(encodeNpz(big)).toEqual(encodeNpz(big));
    expect(encodeNpz(big, { compress: true }).length).toBeLessThan(encodeNpz(big).length / 10);
  });

  it('refuses a file that is not a zip', () => {
    const dir = mkdtempSync(join(tmpdir(), 'npz-'));
    const p = join(dir, 'junk.npz');
    writeFileSync(p, new Uint8Array(100).fill(7));
    const r = readNpz(p);
    expect(!r.ok && r.error.kind).toBe('parse');
    expect(!r.ok && r.error.message).toContain('junk.npz');
  });
});
