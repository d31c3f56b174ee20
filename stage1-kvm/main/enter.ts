import { runEntrypoint } from '../../src/stage1-common/entry.js';
import { enter } from '../enter.js';

// The kvm flavor's enter entrypoint; the build bundles this file into the stage1 image.
runEntrypoint(enter);
