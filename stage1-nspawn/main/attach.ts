import { runEntrypoint } from '../../src/stage1-common/entry.js';
import { attach } from '../attach.js';

// The nspawn flavor's attach entrypoint; the build bundles this file into the stage1 image.
runEntrypoint(attach);
