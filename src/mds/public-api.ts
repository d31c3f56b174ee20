import { isACIdentifier, isACName } from '../appc/acname.js';
import type { Annotation } from '../appc/types.js';
import type { PodIdentity } from './identity.js';
import { isPodUuid, mergedAppAnnotations, type PodRegistry, type RegisteredPod } from './registry.js';

// What apps ask the metadata service (appc spec/ace.md), answered from the
// registry: $AC_METADATA_URL/acMetadata/v1/..., where AC_METADATA_URL ends
// in the pod's token. The request is decided here, without sockets, so that
// every rule can be tested on its own: the Metadata-Flavor header, the
// token, the route, the names. A token only ever leads into its own pod:
// an app name is looked up in that pod alone, and an unknown token is
// told nothing but that.

export const FLAVOR_HEADER = 'metadata-flavor';
export const FLAVOR = 'AppContainer';
const PREFIX = ['acMetadata', 'v1'];

export interface PublicRequest {
  method: string;
  /** The request target as sent (path and query), not decoded. */
  url: string;
  /** The Metadata-Flavor header's values, if sent. */
  flavor: string | string[] | undefined;
  contentType?: string | undefined;
  body: Buffer;
}

export interface PublicResponse {
  status: number;
  contentType: string;
  body: string;
  allow?: string;
}

const TEXT = 'text/plain; charset=us-ascii';
const JSON_TYPE = 'application/json';

function text(status: number, body: string): PublicResponse {
  return { status, contentType: TEXT, body };
}
function json(body: string): PublicResponse {
  return { status: 200, contentType: JSON_TYPE, body };
}
function annotationsJson(list: Annotation[] | undefined): PublicResponse {
  return json(JSON.stringify((list ?? []).map((a) => ({ name: a.name, value: a.value }))));
}
function annotationValue(list: Annotation[] | undefined, name: string): PublicResponse {
  if (!isACIdentifier(name)) return text(400, 'the annotation name is not a valid AC identifier\n');
  const a = (list ?? []).find((x) => x.name === name);
  return a ? text(200, a.value) : text(404, 'no such annotation\n');
}

/** Percent-decoded segments of the path, or undefined when one is not valid UTF-8 percent-encoding. */
function segments(url: string): string[] | undefined {
  const q = url.indexOf('?');
  const p = q === -1 ? url : url.slice(0, q);
  if (!p.startsWith('/')) return undefined;
  try {
    return p.slice(1).split('/').map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}

/** The one value of a form field; undefined when absent or given twice. */
function field(form: URLSearchParams, name: string): string | undefined {
  const all = form.getAll(name);
  return all.length === 1 ? all[0] : undefined;
}

function parseForm(req: PublicRequest): URLSearchParams | PublicResponse {
  const type = (req.contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== '' && type !== 'application/x-www-form-urlencoded') return text(415, 'post a form (application/x-www-form-urlencoded)\n');
  return new URLSearchParams(req.body.toString('utf8'));
}

function sign(pod: RegisteredPod, req: PublicRequest, identity: PodIdentity): PublicResponse {
  const form = parseForm(req);
  if (!(form instanceof URLSearchParams)) return form;
  const content = field(form, 'content');
  if (!content) return text(400, 'the form needs one non-empty "content" field\n');
  return text(200, identity.sign(pod.uuid, content));
}

function verify(req: PublicRequest, identity: PodIdentity): PublicResponse {
  const form = parseForm(req);
  if (!(form instanceof URLSearchParams)) return form;
  const uuid = field(form, 'uuid');
  const content = field(form, 'content');
  const signature = field(form, 'signature');
  if (uuid === undefined || !isPodUuid(uuid.toLowerCase())) return text(400, 'the form needs one "uuid" field holding a pod UUID\n');
  if (!content) return text(400, 'the form needs one non-empty "content" field\n');
  if (signature === undefined) return text(400, 'the form needs one "signature" field\n');
  const ok = identity.verify(uuid.toLowerCase(), content, signature);
  if (ok === undefined) return text(400, 'the signature is not base64\n');
  return ok ? text(200, '') : text(403, 'the signature does not match\n');
}

function appRoute(pod: RegisteredPod, app: string, rest: string[]): PublicResponse {
  if (!isACName(app)) return text(400, 'the app name is not a valid AC name\n');
  const registered = pod.apps.get(app);
  if (!registered) return text(404, 'the pod has no app of this name\n');
  const [a, b, extra] = rest;
  // an annotation name is an AC identifier, which may hold "/"
  if (a === 'annotations') {
    const merged = mergedAppAnnotations(pod, app, registered.imageManifest);
    const name = rest.slice(1).join('/');
    return name === '' ? annotationsJson(merged) : annotationValue(merged, name);
  }
  if (a === 'image' && b === 'manifest' && extra === undefined) return json(registered.imageManifestJson);
  if (a === 'image' && b === 'id' && extra === undefined) {
    const id = pod.manifest.apps.find((x) => x.name === app)!.image.id;
    return text(200, id);
  }
  return text(404, 'no such endpoint\n');
}

function podRoute(pod: RegisteredPod, rest: string[]): PublicResponse {
  const [a, b, extra] = rest;
  if (a === 'annotations') {
    const name = rest.slice(1).join('/');
    return name === '' ? annotationsJson(pod.manifest.annotations) : annotationValue(pod.manifest.annotations, name);
  }
  if (extra !== undefined) return text(404, 'no such endpoint\n');
  if (a === 'manifest' && b === undefined) return json(pod.manifestJson);
  if (a === 'uuid' && b === undefined) return text(200, pod.uuid);
  return text(404, 'no such endpoint\n');
}

function isHmac(rest: string[]): 'sign' | 'verify' | undefined {
  if (rest.length !== 3 || rest[0] !== 'pod' || rest[1] !== 'hmac') return undefined;
  return rest[2] === 'sign' || rest[2] === 'verify' ? rest[2] : undefined;
}

/** Answer one request of an app. */
export function answer(req: PublicRequest, registry: PodRegistry, identity: PodIdentity): PublicResponse {
  const segs = segments(req.url);
  if (!segs || segs.length < 4 || segs[1] !== PREFIX[0] || segs[2] !== PREFIX[1]) return text(404, 'no such endpoint; apps find the service at $AC_METADATA_URL/acMetadata/v1/\n');
  const flavor = Array.isArray(req.flavor) ? req.flavor : req.flavor === undefined ? [] : [req.flavor];
  if (flavor.length !== 1 || flavor[0] !== FLAVOR) return text(400, `requests must carry the header "Metadata-Flavor: ${FLAVOR}"\n`);
  const pod = registry.podOf(segs[0]!);
  if (!pod) return text(401, 'unknown token\n');
  const rest = segs.slice(3);
  const hmac = isHmac(rest);
  if (hmac !== undefined) {
    if (req.method !== 'POST') return { ...text(405, 'use POST\n'), allow: 'POST' };
    return hmac === 'sign' ? sign(pod, req, identity) : verify(req, identity);
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return { ...text(405, 'use GET\n'), allow: 'GET, HEAD' };
  if (rest[0] === 'pod') return podRoute(pod, rest.slice(1));
  if (rest[0] === 'apps' && rest.length >= 3) return appRoute(pod, rest[1]!, rest.slice(2));
  return text(404, 'no such endpoint\n');
}
