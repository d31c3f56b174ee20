import { runEntrypoint } from '../../src/stage1-common/entry.js';
import { appStart } from '../app.js';

// The kvm flavor's app/start entrypoint; the build bundles this file into the stage1 image.
runEntrypoint(appStart);
