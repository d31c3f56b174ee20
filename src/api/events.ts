import fs from 'node:fs';
import path from 'node:path';
import { RktError, isErrno } from '../errors.js';
import { log } from '../log.js';
import { POD_STATE_DIRS, podsDir } from '../pod/layout.js';
import { Pod, type PodState } from '../pod/pod.js';
import { StoreLayout } from '../store/layout.js';
import { storedImageNames } from './images.js';
import { int64, type EventFilter, type EventMsg, type EventTypeName, type KeyValue } from './messages.js';

// Events for ListenEvents, observed from outside: rkt has no event bus, and
// neither has this rkt (no daemon). The watcher compares what the pod
// directories and the store index show now with what it last saw; inotify
// on the pod state dirs and the index's directory makes it look as soon as
// something changes, and a poll catches what inotify cannot report (a dir
// that did not exist yet, an overflowing queue). Each pod's lifecycle is a
// series of milestones that only ever become true; each is reported once,
// in lifecycle order, even when the pod passed several between two looks
// (a short pod can be prepared, run and exit within one poll).

const POLL_MS = 500;
const DEBOUNCE_MS = 40;

type Milestone = 'prepared' | 'aborted' | 'started' | 'exited' | 'gc';

const MILESTONE_EVENT: Record<Milestone, EventTypeName> = {
  prepared: 'EVENT_TYPE_POD_PREPARED',
  aborted: 'EVENT_TYPE_POD_PREPARE_ABORTED',
  started: 'EVENT_TYPE_POD_STARTED',
  exited: 'EVENT_TYPE_POD_EXITED',
  gc: 'EVENT_TYPE_POD_GARBAGE_COLLECTED',
};

interface PodLook {
  state: PodState;
  apps: string[];
  ready: boolean;
  exits: Record<string, number>;
  exitCause?: string;
}

function milestones(p: PodLook): Set<Milestone> {
  const s = new Set<Milestone>();
  const ran = p.state === 'running' || p.state === 'exited' || p.state === 'exited garbage';
  if (ran || p.state === 'prepared') s.add('prepared');
  if (p.state === 'aborted prepare') s.add('aborted');
  if (ran) s.add('started');
  if (p.state === 'exited' || p.state === 'exited garbage') s.add('exited');
  if (p.state === 'exited garbage' || p.state === 'garbage' || p.state === 'deleting') s.add('gc');
  return s;
}

function lookAt(pod: Pod): PodLook | undefined {
  try {
    const state = pod.state();
    let apps: string[] = [];
    let exits: Record<string, number> = {};
    if (state !== 'embryo') {
      apps = pod.manifestIfWritten()?.apps.map((a) => a.name) ?? [];
      exits = pod.appExitStatuses();
    }
    return { state, apps, ready: fs.existsSync(pod.paths.ready), exits, exitCause: pod.exitCause() };
  } catch (err) {
    // moved or removed while we looked: the next look sees where it went
    if (isErrno(err, 'ENOENT') || err instanceof RktError) return undefined;
    throw err;
  }
}

interface Tracked {
  sent: Set<string>;
  /** Looks in a row that did not find the pod: a pod moving between state dirs can be missed once. */
  missing: number;
}

export type EventListener = (events: EventMsg[]) => void;

export class EventWatcher {
  private readonly pods = new Map<string, Tracked>();
  private images = new Map<string, string>();
  private readonly listeners = new Set<EventListener>();
  private readonly watchers = new Map<string, fs.FSWatcher>();
  private timer?: NodeJS.Timeout;
  private pending?: NodeJS.Timeout;

  constructor(private readonly dataDir: string) {}

  /** Start watching at the first listener; everything already there is the baseline, not news. */
  subscribe(fn: EventListener): () => void {
    if (this.listeners.size === 0) this.start();
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
      if (this.listeners.size === 0) this.stop();
    };
  }

  stop(): void {
    clearInterval(this.timer);
    clearTimeout(this.pending);
    this.timer = undefined;
    this.pending = undefined;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    this.pods.clear();
  }

  private start(): void {
    this.scan(true);
    this.timer = setInterval(() => this.scan(false), POLL_MS);
    this.timer.unref();
  }

  private soon(): void {
    if (this.pending || !this.timer) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.scan(false);
    }, DEBOUNCE_MS);
  }

  private watchDirs(): void {
    const dirs = [...POD_STATE_DIRS.map((s) => path.join(podsDir(this.dataDir), s)), new StoreLayout(this.dataDir).dbDir];
    for (const dir of dirs) {
      if (this.watchers.has(dir)) continue;
      try {
        const w = fs.watch(dir, { persistent: false }, () => this.soon());
        w.on('error', () => {
          w.close();
          this.watchers.delete(dir);
        });
        this.watchers.set(dir, w);
      } catch (err) {
        // not created yet: the poll looks again
        if (!isErrno(err, 'ENOENT')) log().debug(`api-service: cannot watch ${dir}: ${(err as Error).message}`);
      }
    }
  }

  private scan(baseline: boolean): void {
    try {
      this.watchDirs();
      const events = [...this.scanPods(baseline), ...this.scanImages(baseline)];
      if (events.length > 0) for (const fn of this.listeners) fn(events);
    } catch (err) {
      // one failed look must not end the stream; the next poll tries again
      log().warn(`api-service: watching for events: ${(err as Error).message}`);
    }
  }

  private scanPods(baseline: boolean): EventMsg[] {
    const events: EventMsg[] = [];
    const time = String(Math.floor(Date.now() / 1000));
    const seen = new Set<string>();
    for (const pod of Pod.listAll(this.dataDir)) {
      const look = lookAt(pod);
      if (!look) continue;
      seen.add(pod.uuid);
      let t = this.pods.get(pod.uuid);
      if (!t) {
        t = { sent: new Set(), missing: 0 };
        this.pods.set(pod.uuid, t);
      }
      t.missing = 0;
      const emit = (key: string, type: EventTypeName, from: string, data: KeyValue[] = []) => {
        if (t.sent.has(key)) return;
        t.sent.add(key);
        if (!baseline) events.push({ type, id: pod.uuid, from, time, data });
      };
      const m = milestones(look);
      for (const k of ['prepared', 'aborted', 'started'] as const) if (m.has(k)) emit(k, MILESTONE_EVENT[k], '');
      // the ready mark says every app has started; an app with an exit status started too
      for (const app of look.apps) {
        if (look.ready || look.exits[app] !== undefined) emit(`app-started:${app}`, 'EVENT_TYPE_APP_STARTED', app);
        const code = look.exits[app];
        if (code !== undefined) emit(`app-exited:${app}`, 'EVENT_TYPE_APP_EXITED', app, [{ Key: 'exit_code', value: String(code) }]);
      }
      if (m.has('exited')) emit('exited', MILESTONE_EVENT.exited, '', look.exitCause ? [{ Key: 'exit_cause', value: look.exitCause }] : []);
      if (m.has('gc')) emit('gc', MILESTONE_EVENT.gc, '');
    }
    for (const [uuid, t] of this.pods) {
      if (seen.has(uuid) || ++t.missing < 2) continue;
      if (!t.sent.has('gc') && !baseline) events.push({ type: 'EVENT_TYPE_POD_GARBAGE_COLLECTED', id: uuid, from: '', time, data: [] });
      this.pods.delete(uuid);
    }
    return events;
  }

  private scanImages(baseline: boolean): EventMsg[] {
    const now = storedImageNames(this.dataDir);
    const time = String(Math.floor(Date.now() / 1000));
    const events: EventMsg[] = [];
    if (!baseline) {
      for (const [id, name] of now) if (!this.images.has(id)) events.push({ type: 'EVENT_TYPE_IMAGE_IMPORTED', id, from: name, time, data: [] });
      for (const [id, name] of this.images) if (!now.has(id)) events.push({ type: 'EVENT_TYPE_IMAGE_REMOVED', id, from: name, time, data: [] });
    }
    this.images = now;
    return events;
  }
}

/** The request's filter: every given condition must hold. */
export function eventMatches(e: EventMsg, f: EventFilter): boolean {
  if (f.types.length > 0 && !f.types.includes(e.type)) return false;
  if (f.ids.length > 0 && !f.ids.includes(e.id)) return false;
  if (f.names.length > 0 && !f.names.includes(e.from)) return false;
  const t = Number(e.time);
  const since = int64(f.since_time, 'since_time');
  const until = int64(f.until_time, 'until_time');
  if (since > 0 && t < since) return false;
  if (until > 0 && t > until) return false;
  return true;
}
