import { runEntrypoint } from '../../src/stage1-common/entry.js';
import { run } from '../run.js';

// The nspawn flavor's run entrypoint; the build bundles this file into the stage1 image.
runEntrypoint(run);
