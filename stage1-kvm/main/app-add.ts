import { runEntrypoint } from '../../src/stage1-common/entry.js';
import { appAdd } from '../app.js';

// The kvm flavor's app/add entrypoint; the build bundles this file into the stage1 image.
runEntrypoint(appAdd);
