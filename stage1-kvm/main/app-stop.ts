import { runEntrypoint } from '../../src/stage1-common/entry.js';
import { appStop } from '../app.js';

// The kvm flavor's app/stop entrypoint; the build bundles this file into the stage1 image.
runEntrypoint(appStop);
