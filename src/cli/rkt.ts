import { main } from './main.js';

const code = await main(process.argv);
// Let pending stdout writes drain before leaving with the status.
process.exitCode = code;
