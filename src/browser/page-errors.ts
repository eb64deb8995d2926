/** What the page says when a run fails. */

/** Messages of a run that ran out of memory: in wasm (ORT's 4 GiB heap) or in a JS allocation. */
const OUT_OF_MEMORY = /out of memory|allocation failed|Array buffer allocation|Invalid typed array length|Invalid array buffer length|Array buffer length|memory access out of bounds|Cannot enlarge memory|bad_alloc|std::bad_alloc/i;

/**
 * The one line the page shows for a failed run on model `name`. Running out of memory
 * fails deep in wasm or in an allocation, with a message that names neither the model nor
 * the way out: that is said plainly; other messages (the library's) are shown as they are.
 */
export function pageErrorMessage(err: unknown, name: string): string {
  const m = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.trim();
  if (OUT_OF_MEMORY.test(m)) {
    return `${name}: the run needs more memory than this browser tab can hold (${m.slice(0, 120)}); use the command line, npx onnx-lr optimize, for this model`;
  }
  return m;
}
