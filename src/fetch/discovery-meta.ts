// The pure half of appc discovery (spec/discovery.md): reading the
// `ac-discovery` and `ac-discovery-pubkeys` meta tags out of a page, and
// rendering URL templates. No I/O here, so every rule can be tested alone.
//
// The page comes from any server and is hostile input: the scanner reads
// it once, left to right, with no backtracking and no recursion, keeps at
// most MAX_TAGS tags, and never evaluates anything but <meta> attributes.

export interface AcMeta {
  /** "ac-discovery" or "ac-discovery-pubkeys". */
  name: string;
  prefix: string;
  /** A URL template (ac-discovery) or a key URL (ac-discovery-pubkeys). */
  uri: string;
}

export const MAX_TAGS = 1000;

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

function decodeEntities(s: string): string {
  return s.replace(/&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});/g, (all, body: string) => {
    if (body[0] === '#') {
      const code = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : all;
    }
    return ENTITIES[body.toLowerCase()] ?? all;
  });
}

const SPACE = /[\t\n\f\r ]/;

/** Attributes of a tag from just after its name; returns them and where the tag ends. */
function readAttributes(html: string, from: number): { attrs: Map<string, string>; end: number } {
  const attrs = new Map<string, string>();
  let i = from;
  const n = html.length;
  while (i < n) {
    while (i < n && (SPACE.test(html[i]!) || html[i] === '/')) i++;
    if (i >= n || html[i] === '>') break;
    const nameStart = i;
    while (i < n && !SPACE.test(html[i]!) && html[i] !== '=' && html[i] !== '>' && html[i] !== '/') i++;
    const name = html.slice(nameStart, i).toLowerCase();
    while (i < n && SPACE.test(html[i]!)) i++;
    let value = '';
    if (html[i] === '=') {
      i++;
      while (i < n && SPACE.test(html[i]!)) i++;
      const q = html[i];
      if (q === '"' || q === "'") {
        const close = html.indexOf(q, i + 1);
        const stop = close === -1 ? n : close;
        value = html.slice(i + 1, stop);
        i = stop + 1;
      } else {
        const start = i;
        while (i < n && !SPACE.test(html[i]!) && html[i] !== '>') i++;
        value = html.slice(start, i);
      }
    }
    // the first of two attributes of one name wins, as in HTML
    if (name !== '' && !attrs.has(name)) attrs.set(name, decodeEntities(value));
  }
  return { attrs, end: i };
}

function metaFrom(attrs: Map<string, string>): AcMeta | undefined {
  const name = attrs.get('name');
  const content = attrs.get('content');
  if (name === undefined || content === undefined) return undefined;
  if (name !== 'ac-discovery' && name !== 'ac-discovery-pubkeys') return undefined;
  const parts = content.trim().split(/\s+/);
  if (parts.length !== 2) return undefined;
  return { name, prefix: parts[0]!, uri: parts[1]! };
}

const RAW_TEXT = new Set(['script', 'style', 'textarea', 'title']);

/** The appc meta tags of an HTML page, in page order. Malformed tags are skipped, never fatal. */
export function extractAcMeta(html: string): AcMeta[] {
  const out: AcMeta[] = [];
  const n = html.length;
  let i = 0;
  while (i < n && out.length < MAX_TAGS) {
    const lt = html.indexOf('<', i);
    if (lt === -1) break;
    if (html.startsWith('<!--', lt)) {
      const close = html.indexOf('-->', lt + 4);
      i = close === -1 ? n : close + 3;
      continue;
    }
    const m = /^<([a-zA-Z][a-zA-Z0-9-]*)/.exec(html.slice(lt, lt + 64));
    if (m === null) {
      i = lt + 1;
      continue;
    }
    const tag = m[1]!.toLowerCase();
    const { attrs, end } = readAttributes(html, lt + m[0].length);
    i = end + 1;
    if (tag === 'meta') {
      const meta = metaFrom(attrs);
      if (meta !== undefined) out.push(meta);
    } else if (RAW_TEXT.has(tag)) {
      // what a script or style holds is not markup
      const close = new RegExp(`</${tag}`, 'gi');
      close.lastIndex = i;
      i = close.exec(html)?.index ?? n;
    }
  }
  return out;
}

/** The template variables of a discovery: the name, the labels, and ext. */
export interface TemplateVars {
  name: string;
  labels: ReadonlyMap<string, string>;
}

export interface Rendered {
  url: string;
  /** How many labels (not name, not ext) the template used. */
  labelsUsed: number;
}

const VARIABLE = /\{([^{}]*)\}/g;

/**
 * Render a template: {name}, {ext} and {LABEL} for each label. Returns
 * undefined when the template has a variable that cannot be substituted:
 * such a template does not match (spec: "all the templates labels can be
 * substituted").
 */
export function renderTemplate(template: string, vars: TemplateVars, ext: string): Rendered | undefined {
  const used = new Set<string>();
  let complete = true;
  const url = template.replace(VARIABLE, (all, key: string) => {
    if (key === 'name') return vars.name;
    if (key === 'ext') return ext;
    const v = vars.labels.get(key);
    if (v === undefined) {
      complete = false;
      return all;
    }
    used.add(key);
    return v;
  });
  return complete ? { url, labelsUsed: used.size } : undefined;
}

export interface AciEndpoint {
  aci: string;
  asc: string;
}

/**
 * The ACI endpoints the meta tags give for a name: only templates whose
 * prefix matches the name and whose every variable is substituted, and of
 * those only the best: the ones that use the most labels.
 */
export function aciEndpoints(metas: readonly AcMeta[], vars: TemplateVars): AciEndpoint[] {
  let best = -1;
  let out: AciEndpoint[] = [];
  for (const m of metas) {
    if (m.name !== 'ac-discovery' || !vars.name.startsWith(m.prefix)) continue;
    const aci = renderTemplate(m.uri, vars, 'aci');
    const asc = renderTemplate(m.uri, vars, 'aci.asc');
    if (aci === undefined || asc === undefined || aci.url === asc.url) continue;
    if (aci.labelsUsed > best) {
      best = aci.labelsUsed;
      out = [];
    }
    if (aci.labelsUsed === best) out.push({ aci: aci.url, asc: asc.url });
  }
  return out;
}

/** The public key URLs the meta tags give for a name (or a prefix being trusted). */
export function pubkeyUrls(metas: readonly AcMeta[], name: string): string[] {
  return metas.filter((m) => m.name === 'ac-discovery-pubkeys' && name.startsWith(m.prefix)).map((m) => m.uri);
}

/** The discovery URLs to try for a name, longest first: example.com/a/b, example.com/a, example.com. */
export function discoveryPaths(name: string): string[] {
  const parts = name.split('/');
  const out: string[] = [];
  for (let end = parts.length; end > 0; end--) out.push(parts.slice(0, end).join('/'));
  return out;
}
