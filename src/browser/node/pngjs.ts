/**
 * pngjs in the browser build: it needs Node streams and zlib. The page decodes PNGs with
 * the browser's own decoder (src/browser/calib-images.ts) and never reaches this.
 */
import { unavailable } from './unavailable.js';

export default { PNG: { sync: { read: unavailable('pngjs PNG.sync.read'), write: unavailable('pngjs PNG.sync.write') } } };
