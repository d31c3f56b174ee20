import test from 'ava';
import fc from 'fast-check';
import { PodIdentity } from '../../src/mds/identity.js';
import { answer, type PublicRequest } from '../../src/mds/public-api.js';
import { register } from '../../src/mds/registration-api.js';
import { PodRegistry } from '../../src/mds/registry.js';
import { fuzz, fuzzParams } from '../helpers/fuzz.js';

// The metadata service's decisions, without sockets: every endpoint of
// appc's spec/ace.md, and the rules that keep one pod's token inside its own
// pod whatever the request looks like.

const UUID_A = '6f1c2c3e-0d4b-4c5a-9e8f-1a2b3c4d5e6f';
const UUID_B = '0b8e6a7d-1234-4abc-8def-0123456789ab';
const TOKEN_A = 'a'.repeat(20) + 'A1b2C3d4E5f6G7h8';
const TOKEN_B = 'b'.repeat(20) + 'Z9y8X7w6V5u4T3s2';
const ID_A = `sha512-${'a1'.repeat(64)}`;
const ID_B = `sha512-${'b2'.repeat(64)}`;

function podManifest(app: string, id: string, annotation: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      acVersion: '0.8.11',
      acKind: 'PodManifest',
      apps: [{ name: app, image: { name: `example.com/${app}`, id }, annotations: [{ name: 'app-note', value: `pod-says-${annotation}` }, { name: 'shared', value: 'from-pod' }] }],
      annotations: [{ name: 'pod-secret', value: `secret-of-${annotation}` }, { name: 'example.com/nested/name', value: 'nested' }],
    }),
  );
}

function imageManifest(app: string): Buffer {
  return Buffer.from(JSON.stringify({ acKind: 'ImageManifest', acVersion: '0.8.11', name: `example.com/${app}`, annotations: [{ name: 'shared', value: 'from-image' }, { name: 'image-only', value: `image-of-${app}` }] }));
}

function world(): { registry: PodRegistry; identity: PodIdentity } {
  const registry = new PodRegistry();
  for (const [uuid, token, app, id, note] of [
    [UUID_A, TOKEN_A, 'alpha', ID_A, 'A'],
    [UUID_B, TOKEN_B, 'beta', ID_B, 'B'],
  ] as const) {
    t200(register({ method: 'PUT', url: `/pods/${uuid}?token=${token}`, body: podManifest(app, id, note) }, registry, 18112).status);
    t200(register({ method: 'PUT', url: `/pods/${uuid}/${app}`, body: imageManifest(app) }, registry, 18112).status);
  }
  return { registry, identity: new PodIdentity() };
}

function t200(status: number): void {
  if (status !== 200) throw new Error(`registration answered ${status}`);
}

function req(url: string, more: Partial<PublicRequest> = {}): PublicRequest {
  return { method: 'GET', url, flavor: 'AppContainer', body: Buffer.alloc(0), ...more };
}

function form(fields: Record<string, string>): Partial<PublicRequest> {
  return { method: 'POST', contentType: 'application/x-www-form-urlencoded', body: Buffer.from(new URLSearchParams(fields).toString()) };
}

const base = (token: string) => `/${token}/acMetadata/v1`;

test('every endpoint of spec/ace.md answers from the token\'s own pod', (t) => {
  const { registry, identity } = world();
  const get = (p: string) => answer(req(base(TOKEN_A) + p), registry, identity);
  t.deepEqual(get('/pod/uuid'), { status: 200, contentType: 'text/plain; charset=us-ascii', body: UUID_A });
  for (const p of ['/pod/annotations', '/pod/annotations/']) {
    const r = get(p);
    t.is(r.contentType, 'application/json');
    t.deepEqual(JSON.parse(r.body), [{ name: 'pod-secret', value: 'secret-of-A' }, { name: 'example.com/nested/name', value: 'nested' }]);
  }
  t.is(get('/pod/annotations/pod-secret').body, 'secret-of-A');
  t.is(get('/pod/annotations/example.com/nested/name').body, 'nested');
  t.is(get('/pod/annotations/none-such').status, 404);
  t.is(JSON.parse(get('/pod/manifest').body).apps[0].name, 'alpha');
  t.is(get('/apps/alpha/image/id').body, ID_A);
  t.is(JSON.parse(get('/apps/alpha/image/manifest').body).name, 'example.com/alpha');
  // the pod's annotations of the app override the image's
  t.deepEqual(JSON.parse(get('/apps/alpha/annotations/').body), [
    { name: 'shared', value: 'from-pod' },
    { name: 'image-only', value: 'image-of-alpha' },
    { name: 'app-note', value: 'pod-says-A' },
  ]);
  t.is(get('/apps/alpha/annotations/shared').body, 'from-pod');
});

test('HMAC: a pod signs as itself, anyone verifies against the signer\'s UUID, nothing else verifies', (t) => {
  const { registry, identity } = world();
  const post = (token: string, what: string, fields: Record<string, string>) => answer(req(base(token) + `/pod/hmac/${what}`, form(fields)), registry, identity);
  const sig = post(TOKEN_A, 'sign', { content: 'hello world' });
  t.is(sig.status, 200);
  t.regex(sig.body, /^[A-Za-z0-9+/]{86}==$/);
  // B verifies A's signature (the point of the endpoint)
  t.is(post(TOKEN_B, 'verify', { content: 'hello world', uuid: UUID_A, signature: sig.body }).status, 200);
  t.is(post(TOKEN_B, 'verify', { content: 'hello world', uuid: UUID_B, signature: sig.body }).status, 403);
  t.is(post(TOKEN_B, 'verify', { content: 'hello world!', uuid: UUID_A, signature: sig.body }).status, 403);
  // B signing the same content gets another signature: it cannot pass for A
  const sigB = post(TOKEN_B, 'sign', { content: 'hello world' });
  t.not(sigB.body, sig.body);
  t.is(post(TOKEN_A, 'verify', { content: 'hello world', uuid: UUID_A, signature: sigB.body }).status, 403);
  const flipped = Buffer.from(sig.body, 'base64');
  flipped[0] ^= 1;
  t.is(post(TOKEN_B, 'verify', { content: 'hello world', uuid: UUID_A, signature: flipped.toString('base64') }).status, 403);
  t.is(post(TOKEN_B, 'verify', { content: 'hello world', uuid: UUID_A, signature: 'AAAA' }).status, 403);
  t.is(post(TOKEN_B, 'verify', { content: 'hello world', uuid: UUID_A, signature: 'not base64!' }).status, 400);
  t.is(post(TOKEN_B, 'verify', { content: 'hello world', uuid: 'nope', signature: sig.body }).status, 400);
  t.is(post(TOKEN_A, 'sign', {}).status, 400);
  // a field given twice is ambiguous
  const twice = answer(req(base(TOKEN_A) + '/pod/hmac/sign', { method: 'POST', body: Buffer.from('content=a&content=b') }), registry, identity);
  t.is(twice.status, 400);
  t.is(answer(req(base(TOKEN_A) + '/pod/hmac/sign', { ...form({ content: 'x' }), contentType: 'application/json' }), registry, identity).status, 415);
  t.is(answer(req(base(TOKEN_A) + '/pod/hmac/sign'), registry, identity).status, 405);
  // another service (another key) does not accept this one's signatures
  t.is(answer(req(base(TOKEN_B) + '/pod/hmac/verify', form({ content: 'hello world', uuid: UUID_A, signature: sig.body })), registry, new PodIdentity()).status, 403);
});

test('the Metadata-Flavor header is required, exactly once and exactly so', (t) => {
  const { registry, identity } = world();
  for (const flavor of [undefined, 'appcontainer', 'Google', ['AppContainer', 'AppContainer'], '']) {
    const r = answer(req(base(TOKEN_A) + '/pod/uuid', { flavor }), registry, identity);
    t.is(r.status, 400, String(flavor));
    t.false(r.body.includes(UUID_A));
  }
});

test('a wrong token, a guessed one or none learns nothing', (t) => {
  const { registry, identity } = world();
  for (const token of ['', 'x', TOKEN_A.slice(0, -1), TOKEN_A + 'x', TOKEN_A.toUpperCase(), UUID_A, encodeURIComponent(TOKEN_A) + '%00', '..']) {
    const r = answer(req(`/${token}/acMetadata/v1/pod/uuid`), registry, identity);
    t.true(r.status === 401 || r.status === 404, `${token}: ${r.status}`);
    t.false(r.body.includes(UUID_A) || r.body.includes(UUID_B));
  }
  registry.removePod(UUID_A);
  t.is(answer(req(base(TOKEN_A) + '/pod/uuid'), registry, identity).status, 401);
});

test("another pod's app names and traversal tricks never reach another pod", (t) => {
  const { registry, identity } = world();
  const paths = [
    '/apps/beta/image/id',
    '/apps/beta/annotations/',
    '/apps/beta/image/manifest',
    '/apps/..%2fbeta/image/id',
    '/apps/alpha/../beta/image/id',
    '/apps/%2e%2e/image/id',
    `/../../${TOKEN_B}/acMetadata/v1/pod/uuid`,
    `/pod/../../../${TOKEN_B}/acMetadata/v1/pod/uuid`,
    `/apps/alpha%2f..%2f..%2f..%2f${TOKEN_B}/image/id`,
    '/apps/%zz/image/id',
    '/apps//image/id',
  ];
  for (const p of paths) {
    const r = answer(req(base(TOKEN_A) + p), registry, identity);
    t.not(r.status, 200, p);
    for (const secret of [UUID_B, ID_B, 'secret-of-B', 'example.com/beta']) t.false(r.body.includes(secret), `${p} leaked ${secret}`);
  }
});

test('fuzz: no path under pod A\'s token ever shows pod B\'s data', (t) => {
  const { registry, identity } = world();
  const word = fc.constantFrom('pod', 'apps', 'alpha', 'beta', 'image', 'id', 'manifest', 'uuid', 'annotations', 'hmac', 'sign', 'verify', '..', '.', '', '%2f', '%2e%2e', TOKEN_B, 'acMetadata', 'v1', 'pod-secret', 'app-note');
  const segs = fc.array(fc.oneof(word, fc.string({ maxLength: 8 })), { maxLength: 8 });
  fuzz(
    t,
    fc.property(segs, fc.constantFrom('GET', 'POST', 'HEAD', 'PUT'), (parts, method) => {
      const r = answer(req(`${base(TOKEN_A)}/${parts.join('/')}`, { method, body: Buffer.from('content=x') }), registry, identity);
      return ![UUID_B, ID_B, 'secret-of-B', 'pod-says-B', 'example.com/beta'].some((s) => r.body.includes(s));
    }),
    fuzzParams(5),
  );
});

test('registration: bad UUIDs, tokens, manifests and apps are refused; a token belongs to one pod', (t) => {
  const registry = new PodRegistry();
  const put = (url: string, body: Buffer) => register({ method: 'PUT', url, body }, registry, 1234);
  t.is(put(`/pods/not-a-uuid?token=${TOKEN_A}`, podManifest('alpha', ID_A, 'A')).status, 400);
  t.is(put(`/pods/${UUID_A}?token=short`, podManifest('alpha', ID_A, 'A')).status, 400);
  t.is(put(`/pods/${UUID_A}?token=${TOKEN_A}&token=${TOKEN_B}`, podManifest('alpha', ID_A, 'A')).status, 400);
  t.is(put(`/pods/${UUID_A}?token=${TOKEN_A}`, Buffer.from('{"acKind":"PodManifest"')).status, 400);
  const ok = put(`/pods/${UUID_A}?token=${TOKEN_A}`, podManifest('alpha', ID_A, 'A'));
  t.deepEqual(ok, { status: 200, body: '{"port":1234}' });
  t.is(put(`/pods/${UUID_B}?token=${TOKEN_A}`, podManifest('beta', ID_B, 'B')).status, 409);
  t.is(put(`/pods/${UUID_A}/beta`, imageManifest('beta')).status, 404);
  t.is(put(`/pods/${UUID_B}/beta`, imageManifest('beta')).status, 404);
  t.is(put(`/pods/${UUID_A}/alpha`, Buffer.from('[]')).status, 400);
  t.is(register({ method: 'DELETE', url: `/pods/${UUID_B}`, body: Buffer.alloc(0) }, registry, 1).status, 404);
  t.is(register({ method: 'DELETE', url: `/pods/${UUID_A}`, body: Buffer.alloc(0) }, registry, 1).status, 200);
  t.is(registry.size, 0);
});
