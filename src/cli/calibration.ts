/** --calib, --verify-data and their image options, parsed into the library's typed data settings (src/api/data.ts reads them). */
import { LrError } from '../errors.js';
import { maxInputBytes as maxInputBytesOf, type DataSettings } from '../api/data.js';
import { num, str, type Parsed } from './args.js';

function numberList(p: Parsed, name: string): number[] | undefined {
  const s = str(p, name);
  if (s === undefined) return undefined;
  const v = s.split(',').map((x) => Number(x.trim()));
  if (v.length === 0 || v.some((x) => !Number.isFinite(x))) throw new LrError('usage', `--${name} expects comma-separated numbers (e.g. 0.485,0.456,0.406), got "${s}"`);
  return v;
}

/** --max-input-mb in MiB (checked as a number here, as a bound in src/api/data.ts). */
const maxInputMb = (p: Parsed): number | undefined => num(p, 'max-input-mb', { min: 1, max: 2 ** 32, integer: true });

/** --max-input-mb as bytes: the bound on each side-input file, decoded archive and decoded image; default 1 GiB. */
export function maxInputBytes(p: Parsed): number {
  return maxInputBytesOf({ maxInputMb: maxInputMb(p) });
}

/** The data options as typed settings; the checks across them are src/api/data.ts's. */
export function dataSettingsFrom(p: Parsed): DataSettings {
  const rs = str(p, 'resize');
  let resize: [number, number] | undefined;
  if (rs !== undefined) {
    const m = /^(\d+)x(\d+)$/.exec(rs.trim());
    if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new LrError('usage', `--resize expects HxW (e.g. 224x224), got "${rs}"`);
    resize = [Number(m[1]), Number(m[2])];
  }
  const layout = str(p, 'layout');
  if (layout !== undefined && layout !== 'nchw' && layout !== 'nhwc') throw new LrError('usage', `--layout expects nchw or nhwc, got "${layout}"`);
  return {
    calib: str(p, 'calib'), calibSamples: num(p, 'calib-samples', { min: 1, max: 1_000_000, integer: true }),
    verifyData: str(p, 'verify-data'), verifySamples: num(p, 'verify-samples', { min: 1, max: 1_000_000, integer: true }),
    resize, mean: numberList(p, 'mean'), std: numberList(p, 'std'), layout, maxInputMb: maxInputMb(p),
  };
}
