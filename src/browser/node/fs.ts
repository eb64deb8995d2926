/**
 * node:fs in the browser build: the page works on bytes, so every file call is a bug that
 * should say so, not a silent no-op. Only the names the library imports exist.
 */
import { unavailable } from './unavailable.js';

export const constants = { R_OK: 4, W_OK: 2, F_OK: 0, O_RDONLY: 0 };
export const accessSync = unavailable('fs.accessSync');
export const appendFileSync = unavailable('fs.appendFileSync');
export const closeSync = unavailable('fs.closeSync');
export const existsSync = unavailable('fs.existsSync');
export const fstatSync = unavailable('fs.fstatSync');
export const fsyncSync = unavailable('fs.fsyncSync');
export const linkSync = unavailable('fs.linkSync');
export const lstatSync = unavailable('fs.lstatSync');
export const mkdtempSync = unavailable('fs.mkdtempSync');
export const openSync = unavailable('fs.openSync');
export const readdirSync = unavailable('fs.readdirSync');
export const readFileSync = unavailable('fs.readFileSync');
export const readSync = unavailable('fs.readSync');
export const realpathSync = unavailable('fs.realpathSync');
export const renameSync = unavailable('fs.renameSync');
export const rmSync = unavailable('fs.rmSync');
export const statSync = unavailable('fs.statSync');
export const unlinkSync = unavailable('fs.unlinkSync');
export const writeFileSync = unavailable('fs.writeFileSync');
export const writeSync = unavailable('fs.writeSync');
