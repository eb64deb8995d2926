/** node:zlib in the browser build: .npz calibration archives are Node-only for now. */
import { unavailable } from './unavailable.js';

export const deflateRawSync = unavailable('zlib.deflateRawSync');
export const inflateRawSync = unavailable('zlib.inflateRawSync');
export const inflateSync = unavailable('zlib.inflateSync');
