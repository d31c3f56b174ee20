import test from 'ava';
import fc from 'fast-check';
import { aciEndpoints, discoveryPaths, extractAcMeta, pubkeyUrls, renderTemplate } from '../../src/fetch/discovery-meta.js';
import { appcArch, discoveryLabels } from '../../src/fetch/discovery.js';
import { cacheMaxAge } from '../../src/fetch/remote.js';
import { pullPolicyOf } from '../../src/fetch/policy.js';
import { credentialsFor } from '../../src/fetch/auth.js';
import { progressLine } from '../../src/fetch/progress.js';
import { signaturesByImage } from '../../src/cli/fetch.js';
import { UsageError } from '../../src/errors.js';
import type { AuthEntry } from '../../src/config/loader.js';
import { fuzz, fuzzParams, withinMs } from '../helpers/fuzz.js';

const vars = (labels: Record<string, string>) => ({ name: 'example.com/reduce-worker', labels: new Map(Object.entries(labels)) });

test('meta tags: both kinds, any quoting, attribute order and case, entities decoded', (t) => {
  const html = `<!doctype html><html><head>
    <META content="example.com https://storage.example.com/{os}/{arch}/{name}-{version}.{ext}" name="ac-discovery">
    <meta name='ac-discovery-pubkeys' content='example.com https://example.com/pubkeys.gpg'/>
    <meta name=ac-discovery content="example.com https://mirror.example.com/{name}.{ext}?a=1&amp;b=2">
    <meta name="description" content="not ours">
  </head></html>`;
  t.deepEqual(extractAcMeta(html), [
    { name: 'ac-discovery', prefix: 'example.com', uri: 'https://storage.example.com/{os}/{arch}/{name}-{version}.{ext}' },
    { name: 'ac-discovery-pubkeys', prefix: 'example.com', uri: 'https://example.com/pubkeys.gpg' },
    { name: 'ac-discovery', prefix: 'example.com', uri: 'https://mirror.example.com/{name}.{ext}?a=1&b=2' },
  ]);
});

test('meta tags in comments and scripts do not count; malformed ones are skipped', (t) => {
  const html = `<!-- <meta name="ac-discovery" content="example.com https://evil/{name}.{ext}"> -->
    <script>document.write('<meta name="ac-discovery" content="example.com https://evil/{name}.{ext}">')</script>
    <meta name="ac-discovery" content="only-one-word">
    <meta name="ac-discovery" content="a b c">
    <meta name="ac-discovery">
    <meta name="ac-discovery" content="example.com https://good/{name}.{ext}">
    <meta name="ac-discovery" content="example.com https://unterminated/{name}.{ext}`;
  const metas = extractAcMeta(html);
  t.deepEqual(
    metas.map((m) => m.uri),
    ['https://good/{name}.{ext}', 'https://unterminated/{name}.{ext}'],
  );
});

test('templates: all variables must be substituted; the best matches use the most labels', (t) => {
  const metas = extractAcMeta(`
    <meta name="ac-discovery" content="example.com https://storage.example.com/{os}/{arch}/{name}-{version}.{ext}">
    <meta name="ac-discovery" content="example.com https://mirror.storage.example.com/{os}/{arch}/{name}-{version}.{ext}">
    <meta name="ac-discovery" content="example.com https://storage.example.com/{os}/{arch}/{name}-latest.{ext}">
    <meta name="ac-discovery" content="other.com https://other.com/{name}.{ext}">`);
  // the spec's own example: with a version, the first two
  t.deepEqual(aciEndpoints(metas, vars({ version: '1.0.0', os: 'linux', arch: 'amd64' })), [
    { aci: 'https://storage.example.com/linux/amd64/example.com/reduce-worker-1.0.0.aci', asc: 'https://storage.example.com/linux/amd64/example.com/reduce-worker-1.0.0.aci.asc' },
    { aci: 'https://mirror.storage.example.com/linux/amd64/example.com/reduce-worker-1.0.0.aci', asc: 'https://mirror.storage.example.com/linux/amd64/example.com/reduce-worker-1.0.0.aci.asc' },
  ]);
  // without one, only the "latest" template can be rendered
  t.deepEqual(aciEndpoints(metas, vars({ os: 'linux', arch: 'amd64' })), [
    { aci: 'https://storage.example.com/linux/amd64/example.com/reduce-worker-latest.aci', asc: 'https://storage.example.com/linux/amd64/example.com/reduce-worker-latest.aci.asc' },
  ]);
  // a template without {ext} cannot tell the image from its signature
  t.deepEqual(aciEndpoints(extractAcMeta('<meta name="ac-discovery" content="example.com https://x/{name}.aci">'), vars({})), []);
  // other labels are variables too
  t.is(renderTemplate('https://x/{name}/{channel}.{ext}', vars({ channel: 'alpha' }), 'aci')?.url, 'https://x/example.com/reduce-worker/alpha.aci');
  t.is(renderTemplate('https://x/{name}/{channel}.{ext}', vars({}), 'aci'), undefined);
});

test('pubkeys and discovery paths', (t) => {
  const metas = extractAcMeta(`<meta name="ac-discovery-pubkeys" content="example.com https://example.com/k.gpg">
    <meta name="ac-discovery-pubkeys" content="other.org https://other.org/k.gpg">`);
  t.deepEqual(pubkeyUrls(metas, 'example.com/app'), ['https://example.com/k.gpg']);
  t.deepEqual(discoveryPaths('example.com/project/subproject'), ['example.com/project/subproject', 'example.com/project', 'example.com']);
});

test('discovery labels: version latest, os linux and this arch by default; given ones win', (t) => {
  t.deepEqual([...discoveryLabels([])], [['version', 'latest'], ['os', 'linux'], ['arch', appcArch()]]);
  t.deepEqual(discoveryLabels([{ name: 'version', value: '1.2' }, { name: 'arch', value: 'aarch64' }]).get('arch'), 'aarch64');
  t.is(appcArch('x64'), 'amd64');
  t.is(appcArch('arm64'), 'aarch64');
});

test('Cache-Control max-age, pull policy flags, credentials scoped by host, progress line', (t) => {
  t.is(cacheMaxAge('public, max-age=3600'), 3600);
  t.is(cacheMaxAge('no-cache, max-age=3600'), 0);
  t.is(cacheMaxAge(undefined), undefined);
  t.is(cacheMaxAge('max-age=abc'), undefined);

  const warnings: string[] = [];
  t.is(pullPolicyOf({ storeOnly: true }, 'update', (w) => warnings.push(w)), 'never');
  t.is(pullPolicyOf({ noStore: true }, 'new', (w) => warnings.push(w)), 'update');
  t.is(pullPolicyOf({}, 'update', (w) => warnings.push(w)), 'update');
  t.is(warnings.length, 2);
  t.throws(() => pullPolicyOf({ storeOnly: true, noStore: true }, 'new', () => undefined), { instanceOf: UsageError });
  t.throws(() => pullPolicyOf({ pullPolicy: 'always' }, 'new', () => undefined), { instanceOf: UsageError });

  const creds = credentialsFor(
    new Map<string, AuthEntry>([
      ['example.com', { domains: ['example.com'], type: 'basic' as const, credentials: { user: 'u', password: 'p' } }],
      ['tok.example.com', { domains: ['tok.example.com'], type: 'oauth' as const, credentials: { token: 'sesame' } }],
    ]),
  );
  t.deepEqual(creds(new URL('https://example.com/x')), { authorization: `Basic ${Buffer.from('u:p').toString('base64')}` });
  t.deepEqual(creds(new URL('https://tok.example.com:8443/x')), { authorization: 'Bearer sesame' });
  t.is(creds(new URL('https://evil-example.com/x')), undefined);
  t.is(creds(new URL('https://sub.example.com/x')), undefined);

  t.regex(progressLine('Downloading ACI', 5_000_000, 10_000_000, 1000), /^Downloading ACI: \[=+> +\] 5\.0 MB\/10\.0 MB 5\.0 MB\/s 0:01 left$/);
  t.regex(progressLine('Downloading ACI', 1500, undefined, 1000), /^Downloading ACI: 1\.5 KB 1\.5 KB\/s$/);
});

// Property: whatever a hostile server puts in the page, the scanner returns
// only well-formed ac-* tags, quickly, and never throws.
test('property: the meta scanner survives any page and finds a planted tag', (t) => {
  const junk = fc.string({ unit: fc.constantFrom('<', '>', '"', "'", '=', ' ', '-', '!', 'meta', 'name', 'content', 'script', '/', '&amp;', 'a', '\n'), maxLength: 400 });
  fuzz(
    t,
    fc.property(junk, junk, (before, after) => {
      const planted = '<meta name="ac-discovery" content="example.com https://planted/{name}.{ext}">';
      const metas = withinMs(500, 'extractAcMeta', () => extractAcMeta(before + after));
      for (const m of metas) {
        if (m.name !== 'ac-discovery' && m.name !== 'ac-discovery-pubkeys') throw new Error(`unexpected tag ${m.name}`);
        if (/\s/.test(m.prefix) || /\s/.test(m.uri) || m.prefix === '' || m.uri === '') throw new Error('malformed tag accepted');
      }
      // a tag after a complete, closed element is always found
      const found = extractAcMeta(`<p>${before.replace(/[<>"'-]/g, '')}</p>${planted}`);
      if (!found.some((m) => m.uri === 'https://planted/{name}.{ext}')) throw new Error('planted tag not found');
    }),
    fuzzParams(3),
  );
});

// Property: rendering substitutes exactly the variables it has values for,
// and refuses a template with any variable left.
test('property: template rendering substitutes every known variable and refuses unknown ones', (t) => {
  const ident = fc.stringMatching(/^[a-z][a-z0-9]{0,7}$/);
  fuzz(
    t,
    fc.property(fc.dictionary(ident, ident, { maxKeys: 5 }), fc.array(ident, { maxLength: 6 }), (labels, used) => {
      const v = { name: 'example.com/app', labels: new Map(Object.entries(labels).filter(([k]) => k !== 'name' && k !== 'ext')) };
      const template = `https://host/${used.map((u) => `{${u}}`).join('/')}/{name}.{ext}`;
      const r = renderTemplate(template, v, 'aci');
      const knowable = used.every((u) => u === 'name' || u === 'ext' || v.labels.has(u));
      if (!knowable) {
        if (r !== undefined) throw new Error('rendered a template with an unknown variable');
        return;
      }
      if (r === undefined) throw new Error('refused a template whose variables are all known');
      if (/[{}]/.test(r.url)) throw new Error(`variable left in ${r.url}`);
      const distinct = new Set(used.filter((u) => u !== 'name' && u !== 'ext'));
      if (r.labelsUsed !== distinct.size) throw new Error(`labelsUsed ${r.labelsUsed}, expected ${distinct.size}`);
    }),
    fuzzParams(3),
  );
});

test('a huge page of tags is scanned in bounded time and tags', (t) => {
  const page = '<meta name="ac-discovery" content="example.com https://x/{name}.{ext}">'.repeat(20_000) + '<script>'.repeat(50_000);
  const metas = withinMs(2000, 'extractAcMeta on a big page', () => extractAcMeta(page));
  t.is(metas.length, 1000);
});

test('rkt fetch: each --signature goes with the image before it', (t) => {
  t.deepEqual(signaturesByImage(['a.aci', '--signature=a.sig', 'b.aci', 'c.aci', '--signature', 'c.sig'], ['a.aci', 'b.aci', 'c.aci']), ['a.sig', undefined, 'c.sig']);
  t.deepEqual(signaturesByImage(['--signature=first.sig', 'a.aci', 'b.aci'], ['a.aci', 'b.aci']), ['first.sig', undefined]);
  t.deepEqual(signaturesByImage(['--pull-policy=new', 'x', '--', '--signature=no'], ['x']), [undefined]);
});
