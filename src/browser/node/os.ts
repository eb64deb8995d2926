/** node:os in the browser build: no temp folder, no host name, no signals; totalmem from the device hint when the browser gives one. */
import { unavailable } from './unavailable.js';

export const constants = { signals: {} as Record<string, number> };
export const tmpdir = unavailable('os.tmpdir');
export const hostname = unavailable('os.hostname');
export function totalmem(): number {
  const gib = (globalThis as { navigator?: { deviceMemory?: number } }).navigator?.deviceMemory;
  return (gib ?? 4) * 2 ** 30;
}
