/** What the browser build's stand-ins for Node modules answer when a Node-only path is taken. */
export function unavailable(what: string): (...args: unknown[]) => never {
  return () => { throw new Error(`${what} is not available in the browser (a Node-only code path was reached)`); };
}
