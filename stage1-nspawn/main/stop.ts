import { runEntrypoint } from '../../src/stage1-common/entry.js';
import { stop } from '../stop.js';

// The nspawn flavor's stop entrypoint; the build bundles this file into the stage1 image.
runEntrypoint(stop);
