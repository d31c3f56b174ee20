import fs from 'node:fs';
import path from 'node:path';
import { RktError, isErrno } from '../errors.js';
import type { GlobalOptions } from './global.js';

// rkt's configuration: JSON files with rktKind/rktVersion in paths.d,
// stage1.d and auth.d of the system, local and user config dirs. auth.d
// holds two kinds, as in rkt: "auth" (per domain) and "dockerAuth" (per
// Docker registry). Later dirs override earlier ones: system < local < user;
// within one dir a domain or registry may be configured only once.

export interface PathsConfig {
  data?: string;
  stage1Images?: string;
}

export interface Stage1Config {
  name?: string;
  version?: string;
  location?: string;
}

export interface AuthEntry {
  domains: string[];
  type: 'basic' | 'oauth';
  credentials: Record<string, string>;
}

export interface DockerAuthEntry {
  registries: string[];
  credentials: { user: string; password: string };
}

export interface RktConfig {
  paths: PathsConfig;
  stage1: Stage1Config;
  /** Keyed by domain. */
  auth: Map<string, AuthEntry>;
  /** Keyed by registry. */
  dockerAuth: Map<string, DockerAuthEntry>;
}

export class ConfigError extends RktError {}

const KINDS_OF_DIR = { 'paths.d': ['paths'], 'stage1.d': ['stage1'], 'auth.d': ['auth', 'dockerAuth'] } as const;
type DirName = keyof typeof KINDS_OF_DIR;

type Json = Record<string, unknown>;

function readConfigFiles(dir: string): { file: string; json: Json }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return [];
    throw err;
  }
  return names
    .filter((n) => n.endsWith('.json'))
    .sort()
    .map((n) => {
      const file = path.join(dir, n);
      let json: unknown;
      try {
        json = JSON.parse(fs.readFileSync(file, 'utf8'));
      } catch (err) {
        throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}; fix or remove it`);
      }
      if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError(`config file ${file} must hold a JSON object`);
      return { file, json: json as Json };
    });
}

function str(json: Json, key: string, file: string, required = false): string | undefined {
  const v = json[key];
  if (v === undefined) {
    if (required) throw new ConfigError(`config file ${file}: "${key}" is required`);
    return undefined;
  }
  if (typeof v !== 'string') throw new ConfigError(`config file ${file}: "${key}" must be a string`);
  return v;
}

function strList(json: Json, key: string, file: string): string[] {
  const v = json[key];
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string')) {
    throw new ConfigError(`config file ${file}: "${key}" must be a non-empty list of strings`);
  }
  return v as string[];
}

/** Keys (domains, registries) already configured by a file of the dir being read, for the duplicate rule. */
type SeenInDir = Map<string, string>;

function claim(seen: SeenInDir, what: 'domain' | 'registry', key: string, file: string): void {
  const other = seen.get(`${what} ${key}`);
  if (other !== undefined) throw new ConfigError(`config file ${file}: ${what} "${key}" is already configured in ${other}; keep it in one file per directory`);
  seen.set(`${what} ${key}`, file);
}

function apply(cfg: RktConfig, dirName: DirName, file: string, json: Json, seen: SeenInDir): void {
  const kinds: readonly string[] = KINDS_OF_DIR[dirName];
  const kind = json.rktKind;
  if (typeof kind !== 'string' || !kinds.includes(kind)) {
    throw new ConfigError(`config file ${file}: rktKind must be ${kinds.map((k) => `"${k}"`).join(' or ')} in ${dirName}`);
  }
  if (json.rktVersion !== 'v1') throw new ConfigError(`config file ${file}: unsupported rktVersion ${JSON.stringify(json.rktVersion)}; use "v1"`);
  switch (kind) {
    case 'paths': {
      const data = str(json, 'data', file);
      const s1 = str(json, 'stage1-images', file);
      if (data !== undefined) cfg.paths.data = data;
      if (s1 !== undefined) cfg.paths.stage1Images = s1;
      break;
    }
    case 'stage1': {
      const name = str(json, 'name', file);
      const version = str(json, 'version', file);
      const location = str(json, 'location', file);
      if ((name === undefined) !== (version === undefined)) throw new ConfigError(`config file ${file}: stage1 "name" and "version" go together`);
      if (name !== undefined) cfg.stage1.name = name;
      if (version !== undefined) cfg.stage1.version = version;
      if (location !== undefined) cfg.stage1.location = location;
      break;
    }
    case 'auth': {
      const type = str(json, 'type', file, true);
      if (type !== 'basic' && type !== 'oauth') throw new ConfigError(`config file ${file}: auth "type" must be basic or oauth`);
      const creds = json.credentials;
      if (typeof creds !== 'object' || creds === null) throw new ConfigError(`config file ${file}: "credentials" is required`);
      const entry: AuthEntry = { domains: strList(json, 'domains', file), type, credentials: creds as Record<string, string> };
      for (const d of entry.domains) {
        claim(seen, 'domain', d, file);
        cfg.auth.set(d, entry);
      }
      break;
    }
    case 'dockerAuth': {
      const creds = json.credentials as { user?: unknown; password?: unknown } | undefined;
      if (!creds || typeof creds.user !== 'string' || typeof creds.password !== 'string' || creds.user === '' || creds.password === '') {
        throw new ConfigError(`config file ${file}: "credentials" needs a non-empty "user" and "password"`);
      }
      const entry: DockerAuthEntry = { registries: strList(json, 'registries', file), credentials: { user: creds.user, password: creds.password } };
      for (const r of entry.registries) {
        claim(seen, 'registry', r, file);
        cfg.dockerAuth.set(r, entry);
      }
      break;
    }
  }
}

export function loadConfig(globals: Pick<GlobalOptions, 'systemConfig' | 'localConfig' | 'userConfig'>): RktConfig {
  const cfg: RktConfig = { paths: {}, stage1: {}, auth: new Map(), dockerAuth: new Map() };
  for (const base of [globals.systemConfig, globals.localConfig, globals.userConfig]) {
    for (const dirName of Object.keys(KINDS_OF_DIR) as DirName[]) {
      const seen: SeenInDir = new Map();
      for (const { file, json } of readConfigFiles(path.join(base, dirName))) apply(cfg, dirName, file, json, seen);
    }
  }
  return cfg;
}

/** The merged configuration in rkt's `rkt config` shape. */
export function configAsJson(cfg: RktConfig): { stage0: Record<string, unknown>[] } {
  const stage0: Record<string, unknown>[] = [];
  const seenAuth = new Set<AuthEntry>();
  for (const e of cfg.auth.values()) {
    if (seenAuth.has(e)) continue;
    seenAuth.add(e);
    stage0.push({ rktVersion: 'v1', rktKind: 'auth', domains: e.domains, type: e.type, credentials: e.credentials });
  }
  const seenDocker = new Set<DockerAuthEntry>();
  for (const e of cfg.dockerAuth.values()) {
    if (seenDocker.has(e)) continue;
    seenDocker.add(e);
    stage0.push({ rktVersion: 'v1', rktKind: 'dockerAuth', registries: e.registries, credentials: e.credentials });
  }
  stage0.push({ rktVersion: 'v1', rktKind: 'paths', data: cfg.paths.data ?? '', 'stage1-images': cfg.paths.stage1Images ?? '' });
  stage0.push({ rktVersion: 'v1', rktKind: 'stage1', name: cfg.stage1.name ?? '', version: cfg.stage1.version ?? '', location: cfg.stage1.location ?? '' });
  return { stage0 };
}
