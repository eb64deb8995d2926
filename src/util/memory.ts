/** The machine's memory as this process may use it. */
import * as os from 'node:os';

const GIB = 2 ** 30;

/** Bytes in GiB, to two decimals: "1.5 GiB". */
export const showGiB = (bytes: number): string => `${Number((bytes / GIB).toFixed(2))} GiB`;

/** The machine's memory, or the cgroup's limit when it is lower (containers). */
export function availableMemory(): number {
  const total = os.totalmem();
  // No `process` in the browser build (its node:os gives the device's memory hint).
  const constrained = typeof process === 'undefined' ? undefined : (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  return constrained !== undefined && constrained > 0 && constrained < total ? constrained : total;
}
