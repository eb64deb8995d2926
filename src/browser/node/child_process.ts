/** node:child_process in the browser build: the CLI's supervisor is Node-only. */
import { unavailable } from './unavailable.js';

export const fork = unavailable('child_process.fork');
