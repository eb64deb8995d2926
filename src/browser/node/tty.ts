/** node:tty in the browser build: no terminal. */
export function isatty(): boolean { return false; }
