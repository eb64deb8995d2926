/** The machine's memory as this process may use it. */
import * as os from 'node:os';

/** The machine's memory, or the cgroup's limit when it is lower (containers). */
export function availableMemory(): number {
  const total = os.totalmem();
  // No `process` in the browser build (its node:os gives the device's memory hint).
  const constrained = typeof process === 'undefined' ? undefined : (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  return constrained !== undefined && constrained > 0 && constrained < total ? constrained : total;
}
