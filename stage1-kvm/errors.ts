import { RktError } from '../src/errors.js';

// Failures of the kvm flavor a user can meet. Each message says what to do
// next; the classes let tests and callers tell the causes apart.

/** The host cannot run the VM as asked (accelerator, memory, qemu, kernel). */
export class KvmHostError extends RktError {}

/** The VM was started but did not get as far as running the apps. */
export class KvmBootError extends RktError {}
