import test from 'ava';
import type { AppSpec } from '../../src/stage1-common/app-spec.js';
import type { Isolator } from '../../src/appc/types.js';
import { checkIsolators, FLY_ISOLATORS, IsolatorUnsupportedError, KVM_ISOLATORS, NSPAWN_ISOLATORS, SECCOMP_ISOLATORS } from '../../src/stage1-common/isolator-support.js';

// Every isolator is applied, or refused naming it: never parsed and dropped.

function spec(app: Isolator[], pod: Isolator[] = []): AppSpec {
  return { name: 'web', isolators: { app, pod } } as unknown as AppSpec;
}

const MEM: Isolator = { name: 'resource/memory', value: { limit: '1G' } };
const SECCOMP: Isolator = { name: 'os/linux/seccomp-retain-set', value: { set: ['@rkt/default-whitelist'] } };
const SYSCTL: Isolator = { name: 'os/unix/sysctl', value: { 'net.ipv4.ip_forward': '1' } };
const NNP: Isolator = { name: 'os/linux/no-new-privileges', value: true };

test('each flavor applies its own set and refuses the rest, naming the isolator and the app', (t) => {
  t.notThrows(() => checkIsolators([spec([MEM, SECCOMP, NNP])], NSPAWN_ISOLATORS));
  t.notThrows(() => checkIsolators([spec([MEM, NNP], [MEM])], KVM_ISOLATORS));
  t.throws(() => checkIsolators([spec([SECCOMP])], KVM_ISOLATORS), { instanceOf: IsolatorUnsupportedError, message: /^app web: isolator os\/linux\/seccomp-retain-set is not supported by the kvm stage1/ });
  t.throws(() => checkIsolators([spec([SYSCTL])], NSPAWN_ISOLATORS), { message: /isolator os\/unix\/sysctl is not supported by the nspawn stage1/ });
  t.throws(() => checkIsolators([spec([MEM])], FLY_ISOLATORS), { message: /app web: isolator resource\/memory is not supported by the fly stage1; fly isolates nothing/ });
  t.notThrows(() => checkIsolators([spec([NNP])], FLY_ISOLATORS));
  t.throws(() => checkIsolators([spec([], [NNP])], KVM_ISOLATORS), { message: /^the pod: isolator os\/linux\/no-new-privileges is not supported/ });
});

test('seccomp switched off by --insecure-options is not refused; an unknown isolator is ignored with a warning', (t) => {
  t.notThrows(() => checkIsolators([spec([SECCOMP])], KVM_ISOLATORS, SECCOMP_ISOLATORS));
  t.notThrows(() => checkIsolators([spec([{ name: 'example.com/frobnicate', value: 1 }])], FLY_ISOLATORS));
});
