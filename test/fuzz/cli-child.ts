/** `node --import tsx test/fuzz/cli-child.ts ARGS…`: the CLI from source, for tests that need a separate process. */
import { main } from '../../src/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
