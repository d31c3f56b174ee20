import type { Command } from 'commander';
import { register as version } from './version.js';
import { register as config } from './config.js';
import { register as fetch } from './fetch.js';
import { register as image } from './image.js';
import { register as trust } from './trust.js';
import { register as run } from './run.js';
import { register as list } from './list.js';
import { register as status } from './status.js';
import { register as podCommands } from './pod-commands.js';
import { register as gc } from './gc.js';
import { register as apiService } from './api-service.js';
import { register as exportPod } from './export.js';
import { register as metadataService } from './metadata-service.js';

// Every subcommand registers itself here. Subcommand modules keep heavy
// imports (store, openpgp, sqlite) inside their actions so start-up stays fast.
export const COMMANDS: ((program: Command) => void)[] = [version, config, trust, fetch, image, run, list, status, podCommands, gc, apiService, exportPod, metadataService];
