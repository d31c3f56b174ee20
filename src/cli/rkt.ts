import { takeLauncherChannel } from '../stage1/launcher-channel.js';
import { isPlainVersion, versionText } from './version.js';

// bin/rkt's launcher, if any, is ours alone: nothing we start inherits it
takeLauncherChannel();

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

// `rkt version` answers before the command line parser, the logger and the
// commands load (about a fifth of a bare start-up); any flag it does not
// ignore takes the common path, which prints the same or refuses the flag.
if (isPlainVersion(process.argv.slice(2))) {
  process.stdout.write(versionText());
} else {
  const { reportFailure } = await import('../log.js');
  const { main } = await import('./main.js');
  // A failure nobody caught (a throwing event handler) is reported like the others.
  process.on('uncaughtException', (err) => process.exit(reportFailure(err)));
  const code = await main(process.argv);
  // Let pending stdout writes drain before leaving with the status.
  process.exitCode = code;
}
