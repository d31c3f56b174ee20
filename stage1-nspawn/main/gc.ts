import { runEntrypoint } from '../../src/stage1-common/entry.js';
import { gc } from '../gc.js';

// The nspawn flavor's gc entrypoint; the build bundles this file into the stage1 image.
runEntrypoint(gc);
