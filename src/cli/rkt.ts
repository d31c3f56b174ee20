import { reportFailure } from '../log.js';
import { main } from './main.js';

// Whoever reads our output went away (`rkt list | head -1`): the rest of the
// output has nowhere to go, which is no failure of ours. End quietly, as a
// Go program killed by SIGPIPE would, but with a status a shell reads as
// success rather than a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

// A failure nobody caught (a throwing event handler) is reported like the others.
process.on('uncaughtException', (err) => process.exit(reportFailure(err)));

const code = await main(process.argv);
// Let pending stdout writes drain before leaving with the status.
process.exitCode = code;
