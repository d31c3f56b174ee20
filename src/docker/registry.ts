// A client of the Docker Registry HTTP API v2, for pulling: the /v2/ ping
// that reveals how the registry wants to be authenticated, basic auth from
// dockerAuth, bearer tokens from the token endpoint its challenge names
// (scoped to pulling one repository), manifests by tag or digest, and blobs
// by digest, each verified while it streams.

import { pipeline, type Readable } from 'node:stream';
import { RktError, printable, quote } from '../errors.js';
import { log } from '../log.js';
import { verified } from './digest.js';
import { HttpError, readBody, request, type HttpResponse } from './http.js';
import { progressStream } from '../fetch/progress.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, type Descriptor } from './manifest.js';
import type { RegistryRef } from './reference.js';

const MAX_TOKEN_RESPONSE = 1024 * 1024;
const TOKEN_CHARS = /^[\x21-\x7e]{1,65536}$/;

export interface Credentials {
  user: string;
  password: string;
}

export interface RegistryOptions {
  insecureTls: boolean;
  allowHttp: boolean;
  credentials?: Credentials;
}

export class RegistryAuthError extends RktError {}
export class RegistryNotFoundError extends RktError {}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parse one WWW-Authenticate header: scheme, then comma-separated key="value" pairs. */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)/gy;
  const rest = m[2]!;
  let pm: RegExpExecArray | null;
  while (rest.length > re.lastIndex && (pm = re.exec(rest)) !== null) {
    params[pm[1]!.toLowerCase()] = pm[2] !== undefined ? pm[2].replace(/\\(.)/g, '$1') : pm[3]!;
    while (rest[re.lastIndex] === ' ') re.lastIndex++;
  }
  return { scheme: m[1]!.toLowerCase(), params };
}

export class RegistryClient {
  private base: URL;
  private authorization: string | undefined;
  private ready = false;

  constructor(readonly ref: RegistryRef, private readonly opts: RegistryOptions) {
    this.base = new URL(`https://${ref.registry}/`);
  }

  private get name(): string {
    return this.ref.registry;
  }

  private authHint(): string {
    return `add a dockerAuth entry for "${this.name}" in auth.d (see docs/images-docker.md)`;
  }

  private get(pathname: string, headers: Record<string, string> = {}): Promise<HttpResponse> {
    return request(new URL(pathname, this.base), { headers, insecureTls: this.opts.insecureTls, authorization: this.authorization });
  }

  /** Find the registry's scheme and authentication; called once before the first request. */
  private async connect(): Promise<void> {
    if (this.ready) return;
    let res: HttpResponse;
    try {
      res = await this.get('/v2/');
    } catch (err) {
      const cause = (err as { cause?: NodeJS.ErrnoException }).cause;
      const plain = cause?.code === 'EPROTO' || /wrong version number|packet length too long/.test(cause?.message ?? '');
      if (!(err instanceof HttpError) || !plain || !this.opts.allowHttp) throw err;
      log().warn(`${this.name} does not speak TLS; using plain http as --insecure-options=http allows`);
      this.base = new URL(`http://${this.ref.registry}/`);
      res = await this.get('/v2/');
    }
    res.body.resume();
    if (this.base.protocol === 'https:' && this.opts.insecureTls) log().warn(`TLS certificate verification for ${this.name} is disabled (--insecure-options=tls)`);
    if (res.status === 401) {
      await this.authenticate(res);
    } else if (res.status !== 200) {
      throw new HttpError(`${this.name} does not look like a Docker registry (GET /v2/ answered ${res.status}); check the registry name`);
    }
    this.ready = true;
  }

  private async authenticate(res: HttpResponse): Promise<void> {
    const header = res.headers['www-authenticate'];
    const challenge = parseChallenge(Array.isArray(header) ? header[0] ?? '' : header ?? '');
    const creds = this.opts.credentials;
    const basic = creds ? `Basic ${Buffer.from(`${creds.user}:${creds.password}`).toString('base64')}` : undefined;
    if (challenge?.scheme === 'basic') {
      if (!basic) throw new RegistryAuthError(`${this.name} requires a user name and password; ${this.authHint()}`);
      this.authorization = basic;
      const check = await this.get('/v2/');
      check.body.resume();
      if (check.status === 401) throw new RegistryAuthError(`${this.name} refused the user name and password; check the dockerAuth entry for "${this.name}" in auth.d`);
      return;
    }
    if (challenge?.scheme !== 'bearer') {
      throw new RegistryAuthError(`${this.name} asks for authentication of an unsupported kind (${quote(challenge?.scheme ?? 'none', 20)}); only basic and bearer tokens are supported`);
    }
    this.authorization = `Bearer ${await this.fetchToken(challenge, basic)}`;
  }

  private async fetchToken(challenge: Challenge, basic: string | undefined): Promise<string> {
    const realm = challenge.params.realm;
    let url: URL;
    try {
      url = new URL(realm ?? '');
    } catch {
      throw new RegistryAuthError(`${this.name} names no valid token endpoint in its challenge; the registry is misconfigured`);
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.opts.allowHttp)) {
      throw new RegistryAuthError(`the token endpoint of ${this.name} (${printable(url.origin, 100)}) is not https; allow plain http with --insecure-options=http`);
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', `repository:${this.ref.repository}:pull`);
    const where = `the token endpoint of ${this.name} (${url.host})`;
    const res = await request(url, { insecureTls: this.opts.insecureTls, authorization: basic });
    if (res.status === 401 || res.status === 403) {
      res.body.resume();
      throw new RegistryAuthError(`${where} refused ${basic ? 'the credentials' : 'an anonymous pull'} (${res.status}); ${basic ? `check the dockerAuth entry for "${this.name}" in auth.d` : this.authHint()}`);
    }
    if (res.status !== 200) {
      res.body.resume();
      throw new RegistryAuthError(`${where} answered ${res.status}; try again later`);
    }
    const body = await readBody(res, MAX_TOKEN_RESPONSE, `the answer of ${where}`);
    let token: unknown;
    try {
      const json = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
      token = json.token ?? json.access_token;
    } catch {
      throw new RegistryAuthError(`${where} did not answer with JSON; the registry is misconfigured`);
    }
    if (typeof token !== 'string' || !TOKEN_CHARS.test(token)) throw new RegistryAuthError(`${where} gave no usable token; the registry is misconfigured`);
    log().debug({ registry: this.name }, 'bearer token obtained');
    return token;
  }

  private failure(res: HttpResponse, what: string): RktError {
    res.body.resume();
    if (res.status === 401 || res.status === 403) {
      return new RegistryAuthError(`${this.name} refused access to ${what} (${res.status}); ${this.opts.credentials ? `check the dockerAuth entry for "${this.name}" in auth.d` : this.authHint()}`);
    }
    if (res.status === 404) return new RegistryNotFoundError(`${what} is not in ${this.name} (404); check the repository, tag or digest`);
    return new HttpError(`${this.name} answered ${res.status} for ${what}; try again later`);
  }

  /** A manifest or index by tag or digest, read whole (capped), with its media type. */
  async manifest(reference: string): Promise<{ bytes: Buffer; mediaType?: string; digest?: string }> {
    await this.connect();
    const what = `${this.ref.repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference}`;
    const res = await this.get(`/v2/${this.ref.repository}/manifests/${reference}`, { accept: MANIFEST_ACCEPT.join(', ') });
    if (res.status !== 200) throw this.failure(res, `image ${what}`);
    const bytes = await readBody(res, MAX_MANIFEST_BYTES, `the manifest of ${what}`);
    const header = res.headers['docker-content-digest'];
    return { bytes, mediaType: res.headers['content-type'], digest: typeof header === 'string' ? header : undefined };
  }

  /** A blob's bytes, failing the stream if they break the descriptor's digest or size. */
  async blob(desc: Descriptor, name: string): Promise<Readable> {
    await this.connect();
    const res = await this.get(`/v2/${this.ref.repository}/blobs/${desc.digest}`);
    if (res.status !== 200) throw this.failure(res, `blob ${desc.digest} of ${this.ref.repository}`);
    // a progress line per blob on a terminal, as for ACIs (src/fetch/progress.ts)
    const body = pipeline(res.body, progressStream(`Downloading ${desc.digest.slice(0, 19)}`, desc.size), () => undefined);
    return verified(body, { digest: desc.digest, size: desc.size, name });
  }
}
