import { reportFailure } from '../log.js';
import { main } from './main.js';

// A failure nobody caught (a throwing event handler) is reported like the others.
process.on('uncaughtException', (err) => process.exit(reportFailure(err)));

const code = await main(process.argv);
// Let pending stdout writes drain before leaving with the status.
process.exitCode = code;
