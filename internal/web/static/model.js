// The model of one build's log: the entries held, the omission notices
// among them, their groups, the display rows a filter leaves and the
// search matches. Pure: no DOM, no network, no clock (callers pass now),
// so that Node's test runner can run it (internal/web/test).

import { strip } from './ansi.js';

export const levelRank = { debug: 0, info: 1, warn: 2, error: 3 };

export const terminalStatuses = ['ready', 'failed', 'cancelled', 'timeout'];

export const isTerminal = e => e.kind === 'end' || e.kind === 'cancelled';

// buildTotal is how long build b took, or has taken so far at now (ms):
// from created_at to finished_at, the definition the CLI uses too, so
// that both show the same figure. A build that ended without a
// finished_at ends at its last update. NaN when unknown.
export function buildTotal(b, now) {
  const start = Date.parse(b.created_at);
  let end = now;
  if (b.finished_at) end = Date.parse(b.finished_at);
  else if (terminalStatuses.includes(b.status) && b.updated_at) end = Date.parse(b.updated_at);
  return end - start;
}

// parseTime reads RFC 3339 with any fraction and offset into ms since
// the epoch. Date.parse is slow enough to matter at 100,000 entries, and
// neighbouring entries mostly share their second, so the second is parsed
// once and the fraction added; anything unusual goes to Date.parse.
const tsRE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/i;
let tsKey = '', tsBase = NaN;
export function parseTime(s) {
  if (typeof s !== 'string') return NaN;
  const m = tsRE.exec(s);
  if (!m) return Date.parse(s);
  const key = m[1] + m[3];
  if (key !== tsKey) { tsKey = key; tsBase = Date.parse(key.toUpperCase()); }
  return tsBase + (m[2] ? Number((m[2] + '00').slice(0, 3)) : 0);
}

// omission returns the dropped range an omission notice stands for, or
// null when e is not one. The server sends a notice, at the range's last
// offset, in place of the entries the size cap dropped.
export function omission(e) {
  const m = e && e.kind === 'warning' && e.result_metadata;
  if (!m || typeof m !== 'object') return null;
  const { omitted_from: from, omitted_to: to, omitted_entries: entries, omitted_bytes: bytes } = m;
  if (![from, to, entries, bytes].every(Number.isSafeInteger) || to !== e.offset || from > to) return null;
  return { from, to, entries, bytes };
}

export function thousands(n) { return n.toLocaleString('en-US'); }

// humanBytes is the server's binary-unit size: 512 B, 14.4 KiB, 96.1 MiB.
export function humanBytes(n) {
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return v.toFixed(1).replace(/\.0$/, '') + ' ' + units[u];
}

// omissionText is a divider's text: "18,204 lines (96.1 MiB) omitted".
export function omissionText(o) {
  return thousands(o.entries) + (o.entries === 1 ? ' line (' : ' lines (') + humanBytes(o.bytes) + ') omitted';
}

export function groupKey(e) {
  if (e.step_index != null) return 's' + e.step_index;
  if (e.phase) return 'p' + e.phase;
  return null;
}

export function messageLines(e) {
  const m = String(e.message ?? '');
  return m.indexOf('\n') < 0 ? [m] : m.replace(/\n+$/, '').split('\n');
}

// groupLabel is "[phase] step i/n"; totalSteps is the build's, for
// entries that do not say.
export function groupLabel(g, totalSteps) {
  const parts = [];
  if (g.phase) parts.push('[' + g.phase + ']');
  if (g.step != null) parts.push('step ' + g.step + '/' + (g.total ?? totalSteps ?? '?'));
  return parts.join(' ');
}

// rawText is an entry as a line of the text download: timestamp, level,
// phase, step and the message exactly as stored (ANSI sequences
// included, as a terminal would want them).
export function rawText(e) {
  let s = e.timestamp + ' ' + String(e.level).toUpperCase().padEnd(5);
  if (e.phase) s += ' [' + e.phase + ']';
  if (e.step_index != null) s += ' step ' + e.step_index + '/' + (e.total_steps ?? '?');
  return s + ' ' + e.message + '\n';
}

// Gap is an entry past the next offset expected that no notice explains:
// the reader must reopen from Log.next rather than skip anything.
export class Gap extends Error {}

// NOTICE is the group index of an omission notice: in no group, so that
// a divider shows even inside a collapsed one, and never filtered.
export const NOTICE = -2;

function newGroup(key, e, i, collapsed) {
  return {
    key, first: i, last: i, n: 0, phase: e.phase || '', step: e.step_index ?? null, total: e.total_steps ?? null,
    attempt: e.attempt ?? 0, maxAttempts: e.max_attempts ?? 0, errInAttempt: false, errors: 0, warns: 0,
    cache: new Map(), subject: '', collapsed,
  };
}

function updateGroup(g, e, i) {
  g.last = i;
  g.n++;
  if (!g.phase && e.phase) g.phase = e.phase;
  if (e.total_steps != null) g.total = e.total_steps;
  if (e.attempt != null && e.attempt > g.attempt) { g.attempt = e.attempt; g.errInAttempt = false; }
  if (e.max_attempts != null) g.maxAttempts = e.max_attempts;
  if (e.cache_status) g.cache.set(e.cache_status, (g.cache.get(e.cache_status) || 0) + 1);
  if (e.level === 'error' || e.kind === 'error') { g.errors++; g.errInAttempt = true; }
  else if (e.level === 'warn' || e.kind === 'warning') g.warns++;
  if (!g.subject) g.subject = e.cache_subject || strip(String(e.message).split('\n', 1)[0]).trim().slice(0, 120);
}

// Log is the entries of one build, in offset order, with what is derived
// from them. Entries are dense from offset 0 except where an omission
// notice stands for a dropped range, so an entry's index in E is its
// offset only up to the first notice (see indexAt).
export class Log {
  constructor() {
    this.E = []; // entries, exactly as the API sent them
    this.T = []; // their timestamps in ms since the epoch (NaN if unparseable)
    this.G = []; // the group index of each entry, -1 for none, NOTICE for a notice
    this.N = []; // how many display lines each entry's message has
    this.low = []; // lazily: the message without ANSI, lower-cased, for search
    this.groups = [];
    this.notices = []; // indexes of the omission notices
    this.curG = -1; // the group in progress: the last grouped entry's
    this.next = 0; // offset of the next entry expected
    this.done = false; // the terminal entry is held
    this.terminal = -1; // its index
    this.collapseNew = false; // new groups start collapsed
    this.minLevel = 0; // the level filter
    this.query = ''; // the search, lower-cased
    this.matches = []; // indexes of entries matching query, ascending
    this.rowE = []; // per display row: entry index, or -1-g for group g's header
    this.rowL = []; // per display row: line number within the entry's message
  }

  // add takes entries in offset order and returns how many it kept. Ones
  // already held are skipped (a resume that overlaps); one past the next
  // expected offset throws Gap, unless it is an omission notice for a
  // range that starts at the next offset expected.
  add(entries) {
    let added = 0;
    for (const e of entries) {
      if (this.done || typeof e.offset !== 'number' || e.offset < this.next) continue;
      const o = omission(e);
      if (e.offset > this.next && !(o && o.from === this.next)) throw new Gap(`expected offset ${this.next}, got ${e.offset}`);
      const i = this.E.length;
      this.E.push(e);
      this.T.push(parseTime(e.timestamp));
      this.N.push(o ? 1 : messageLines(e).length);
      this.next = e.offset + 1;
      let g = -1;
      if (o) {
        // The group in progress goes on after the divider.
        g = NOTICE;
        this.notices.push(i);
      } else if (isTerminal(e)) {
        this.done = true;
        this.terminal = i;
      } else {
        const key = groupKey(e);
        const prev = this.curG;
        // An entry without phase or step belongs to the group in
        // progress: it is output printed while that step ran.
        if (prev >= 0 && (key === null || key === this.groups[prev].key)) g = prev;
        else if (key !== null) { g = this.groups.length; this.groups.push(newGroup(key, e, i, this.collapseNew)); }
        if (g >= 0) updateGroup(this.groups[g], e, i);
        this.curG = g;
      }
      this.G.push(g);
      this.pushRows(i);
      if (this.query && this.shown(i) && this.matchText(i).includes(this.query)) this.matches.push(i);
      added++;
    }
    return added;
  }

  // indexAt returns the index in E of the entry at offset off, or of the
  // notice whose range holds it; -1 if neither is held.
  indexAt(off) {
    let lo = 0, hi = this.E.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.E[mid].offset < off) lo = mid + 1; else hi = mid - 1;
    }
    if (lo >= this.E.length) return -1;
    const e = this.E[lo];
    if (e.offset === off) return lo;
    const o = omission(e);
    return o && o.from <= off ? lo : -1;
  }

  isNotice(i) { return this.G[i] === NOTICE; }

  // omitted is how many entries the notices held stand for.
  omitted() { return this.notices.reduce((n, i) => n + omission(this.E[i]).entries, 0); }

  // shown says whether entry i passes the level filter; the terminal
  // entry and the notices always do.
  shown(i) {
    return i === this.terminal || this.G[i] === NOTICE || (levelRank[this.E[i].level] ?? 1) >= this.minLevel;
  }

  pushRows(i) {
    const g = this.G[i];
    if (g >= 0 && this.groups[g].first === i) { this.rowE.push(-1 - g); this.rowL.push(0); }
    if (g >= 0 && this.groups[g].collapsed) return;
    if (!this.shown(i)) return;
    for (let l = 0; l < this.N[i]; l++) { this.rowE.push(i); this.rowL.push(l); }
  }

  rebuildRows() {
    this.rowE = [];
    this.rowL = [];
    for (let i = 0; i < this.E.length; i++) this.pushRows(i);
  }

  setCollapsed(gi, on) { this.groups[gi].collapsed = on; this.rebuildRows(); }

  setAllCollapsed(on) {
    this.collapseNew = on;
    for (const g of this.groups) g.collapsed = on;
    this.rebuildRows();
  }

  setMinLevel(level) {
    this.minLevel = level;
    this.rebuildRows();
    this.search(this.query);
  }

  matchText(i) {
    let s = this.low[i];
    if (s === undefined) s = this.low[i] = strip(String(this.E[i].message ?? '')).toLowerCase();
    return s;
  }

  // search sets the query (lower-cased) and finds its matches among the
  // entries the filter shows.
  search(query) {
    this.query = query;
    this.matches = [];
    if (!query) return;
    for (let i = 0; i < this.E.length; i++) if (this.shown(i) && this.matchText(i).includes(query)) this.matches.push(i);
  }

  // rowOf returns the first display row of entry i, expanding its group
  // and clearing a level filter that hides it; -1 if i is not held.
  rowOf(i) {
    if (i < 0 || i >= this.E.length) return -1;
    const g = this.G[i];
    let rebuild = false;
    if (g >= 0 && this.groups[g].collapsed) { this.groups[g].collapsed = false; rebuild = true; }
    if (!this.shown(i)) { this.minLevel = 0; rebuild = true; }
    if (rebuild) this.rebuildRows();
    // Rows are in entry order, so a binary search over entry rows finds it.
    let lo = 0, hi = this.rowE.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      let r = mid;
      while (r <= hi && this.rowE[r] < 0) r++; // skip group headers
      if (r > hi) { hi = mid - 1; continue; }
      const v = this.rowE[r];
      if (v === i) { while (r > 0 && this.rowE[r - 1] === i) r--; return r; }
      if (v < i) lo = r + 1; else hi = mid - 1;
    }
    return -1;
  }

  // entryAtRow is the entry a display row shows (a group header's first).
  entryAtRow(r) {
    const i = this.rowE[Math.min(r, this.rowE.length - 1)] ?? 0;
    return i < 0 ? this.groups[-1 - i].first : i;
  }

  // terminalStatus is how the build ended: the build's status once it is
  // terminal, else what the terminal entry says.
  terminalStatus(status) {
    if (terminalStatuses.includes(status)) return status;
    const e = this.E[this.terminal];
    if (!e) return '';
    if (e.kind === 'cancelled') return 'cancelled';
    return e.level === 'error' ? 'failed' : 'ready';
  }

  // groupEnd is when group gi ended: at the next group's first entry, the
  // terminal entry, its own last entry once the build is over, or now.
  groupEnd(gi, status, now) {
    const nextG = this.groups[gi + 1];
    if (nextG) return this.T[nextG.first];
    if (this.done) return this.T[this.terminal];
    if (terminalStatuses.includes(status)) return this.T[this.groups[gi].last];
    return now;
  }

  // outcome of group gi: ok, failed (an error in its latest attempt),
  // running, or, for the last group of a build that did not end ready,
  // the build's status.
  outcome(gi, status) {
    const g = this.groups[gi];
    const last = gi === this.groups.length - 1;
    if (last && this.done && status && status !== 'ready' && terminalStatuses.includes(status)) return status;
    if (g.errInAttempt) return 'failed';
    if (last && !this.done && !terminalStatuses.includes(status)) return 'running';
    return 'ok';
  }
}
