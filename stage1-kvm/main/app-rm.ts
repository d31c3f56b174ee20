import { runEntrypoint } from '../../src/stage1-common/entry.js';
import { appRm } from '../app.js';

// The kvm flavor's app/rm entrypoint; the build bundles this file into the stage1 image.
runEntrypoint(appRm);
