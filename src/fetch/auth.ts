import type { AuthEntry } from '../config/loader.js';

// auth.d's credentials as request headers, as rkt sends them: `basic`
// (credentials.user, credentials.password) as HTTP basic auth, `oauth`
// (credentials.token) as a bearer token. An entry counts only for the
// domains it names: the host of each request (with its port when the entry
// names one) must be one of them exactly, so a redirect to another host, or
// a name that merely ends like the domain, gets nothing. The HTTP client
// sends them over https only.

export function credentialsFor(auth: ReadonlyMap<string, AuthEntry>): (url: URL) => Record<string, string> | undefined {
  return (url: URL) => {
    const entry = auth.get(url.host) ?? auth.get(url.hostname);
    if (entry === undefined) return undefined;
    if (entry.type === 'basic') {
      const { user, password } = entry.credentials;
      if (typeof user !== 'string' || typeof password !== 'string') return undefined;
      return { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` };
    }
    const token = entry.credentials.token;
    return typeof token === 'string' ? { authorization: `Bearer ${token}` } : undefined;
  };
}
