/** node:util in the browser build: argument parsing is the CLI's. */
import { unavailable } from './unavailable.js';

export const parseArgs = unavailable('util.parseArgs');
