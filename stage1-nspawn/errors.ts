import { RktError } from '../src/errors.js';

// Failures of the nspawn flavor a user can meet. Each message says what to
// do next; the classes let tests and callers tell the causes apart.

/** The host lacks what the flavor needs (systemd-nspawn, cgroups, util-linux). */
export class NspawnHostError extends RktError {}

/** The pod asks for something this flavor refuses (a network, a bad isolator). */
export class NspawnConfigError extends RktError {}

/** The container was started but did not get as far as running the apps. */
export class NspawnBootError extends RktError {}
