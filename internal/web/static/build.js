// The console of one build: /console/builds/{build_id}.
//
// Data path: the backlog comes in JSON pages of up to 10,000 entries
// (Accept: application/json, with the API key), then an EventSource on
// dialect A follows live entries with a per-build stream token. Every
// entry is accepted only at the offset the page expects next, so a
// resumed stream that repeats entries adds nothing, and one that would
// skip some is dropped and reopened from the last offset held. The one
// jump allowed is an omission notice: the server's stand-in for a middle
// range the size cap dropped, drawn as a divider.
//
// Rendering: all entries are kept in memory, the DOM holds only the rows
// in view (plus a margin), so 100,000 entries cost about 100 elements.

import { parse, strip, styleSpan } from './ansi.js';
import {
  api, apiBase, withKey, keyOrAsk, APIError, h, duration, buildTotal, setStatus, fmtCount, fmtTime,
  terminalStatuses, forgetButton,
} from './common.js';

const ROW_H = 18; // px; the same as --row-h in console.css
const OVERSCAN = 30; // rows rendered above and below the viewport
const PAGE = 10000; // the API's largest JSON page
const levelRank = { debug: 0, info: 1, warn: 2, error: 3 };

const $ = id => document.getElementById(id);
const el = {
  id: $('b-id'), status: $('b-status'), conn: $('b-conn'), template: $('b-template'), created: $('b-created'),
  elapsed: $('b-elapsed'), elapsedLabel: $('b-elapsed-label'), count: $('b-count'), steps: $('b-steps'),
  terminal: $('b-terminal'), error: $('b-error'), timeline: $('timeline'),
  log: $('log'), spacer: $('spacer'), rows: $('rows'),
  follow: $('t-follow'), ts: $('t-ts'), level: $('t-level'), search: $('t-search'), hits: $('t-hits'),
};

const buildID = (() => {
  const p = location.pathname;
  const rest = p.slice(p.indexOf('/console/builds/') + '/console/builds/'.length).replace(/\/+$/, '');
  try { return decodeURIComponent(rest); } catch { return rest; }
})();
const buildPath = '/v1/templates/builds/' + encodeURIComponent(buildID);

// S is the page's whole state. Entries are dense from offset 0 except
// where an omission notice stands for a dropped range, so an entry's
// index in E is its offset only up to the first notice (see indexAt).
const S = {
  build: null,
  E: [], // entries, exactly as the API sent them
  T: [], // their timestamps in ms since the epoch (NaN if unparseable)
  G: [], // the group index of each entry, -1 for none
  curG: -1, // the group in progress: the last grouped entry's
  notices: [], // indexes of the omission notices held
  N: [], // how many display lines each entry's message has
  low: [], // lazily: the message without ANSI, lower-cased, for search
  groups: [],
  next: 0, // offset of the next entry expected
  done: false, // the terminal entry is held
  terminal: -1, // its index
  rowE: [], // per display row: entry index, or -1-g for group g's header
  rowL: [], // per display row: line number within the entry's message
  minLevel: 0,
  follow: true,
  sel: -1, // entry index the #L permalink points at
  query: '',
  matches: [], // entry indexes matching query, ascending
  cur: -1, // index into matches
  collapseNew: false, // new groups start collapsed after "Collapse all"
  es: null,
  retries: 0,
  retryTimer: 0,
};

// ---- entries and groups ----

// parseTime reads RFC 3339 with any fraction and offset into ms since
// the epoch. Date.parse is slow enough to matter at 100,000 entries, and
// neighbouring entries mostly share their second, so the second is parsed
// once and the fraction added; anything unusual goes to Date.parse.
const tsRE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/i;
let tsKey = '', tsBase = NaN;
function parseTime(s) {
  if (typeof s !== 'string') return NaN;
  const m = tsRE.exec(s);
  if (!m) return Date.parse(s);
  const key = m[1] + m[3];
  if (key !== tsKey) { tsKey = key; tsBase = Date.parse(key.toUpperCase()); }
  return tsBase + (m[2] ? Number((m[2] + '00').slice(0, 3)) : 0);
}

const isTerminal = e => e.kind === 'end' || e.kind === 'cancelled';

// omission returns the dropped range an omission notice stands for, or
// null when e is not one. The notice sits at the range's last offset.
function omission(e) {
  const m = e && e.kind === 'warning' && e.result_metadata;
  if (!m || typeof m !== 'object') return null;
  const { omitted_from: from, omitted_to: to, omitted_entries: entries, omitted_bytes: bytes } = m;
  if (![from, to, entries, bytes].every(Number.isSafeInteger) || to !== e.offset || from > to) return null;
  return { from, to, entries, bytes };
}

// humanBytes is the server's binary-unit size: 512 B, 14.4 KiB, 96.1 MiB.
function humanBytes(n) {
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return v.toFixed(1).replace(/\.0$/, '') + ' ' + units[u];
}

function omissionText(o) {
  return fmtCount(o.entries) + (o.entries === 1 ? ' line (' : ' lines (') + humanBytes(o.bytes) + ') omitted';
}

// indexAt returns the index in E of the entry at offset off, or of the
// notice whose range holds it; -1 if neither is held.
function indexAt(off) {
  let lo = 0, hi = S.E.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (S.E[mid].offset < off) lo = mid + 1; else hi = mid - 1;
  }
  if (lo >= S.E.length) return -1;
  const e = S.E[lo];
  if (e.offset === off) return lo;
  const o = omission(e);
  return o && o.from <= off ? lo : -1;
}

function groupKey(e) {
  if (e.step_index != null) return 's' + e.step_index;
  if (e.phase) return 'p' + e.phase;
  return null;
}

function newGroup(key, e, i) {
  return {
    key, first: i, last: i, n: 0, phase: e.phase || '', step: e.step_index ?? null, total: e.total_steps ?? null,
    attempt: e.attempt ?? 0, maxAttempts: e.max_attempts ?? 0, errInAttempt: false, errors: 0, warns: 0,
    cache: new Map(), subject: '', collapsed: S.collapseNew,
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

// shown says whether entry i passes the level filter; the terminal entry
// always does.
function shown(i) {
  const e = S.E[i];
  return i === S.terminal || S.G[i] === -2 || (levelRank[e.level] ?? 1) >= S.minLevel;
}

function pushRows(i) {
  const g = S.G[i];
  if (g >= 0 && S.groups[g].first === i) { S.rowE.push(-1 - g); S.rowL.push(0); }
  if (g >= 0 && S.groups[g].collapsed) return;
  if (!shown(i)) return;
  for (let l = 0; l < S.N[i]; l++) { S.rowE.push(i); S.rowL.push(l); }
}

function rebuildRows() {
  S.rowE = [];
  S.rowL = [];
  for (let i = 0; i < S.E.length; i++) pushRows(i);
  dirty();
}

function messageLines(e) {
  const m = String(e.message ?? '');
  return m.indexOf('\n') < 0 ? [m] : m.replace(/\n+$/, '').split('\n');
}

class Gap extends Error {}

// add takes entries in offset order. Ones already held are skipped (a
// resume that overlaps); one past the next expected offset is a gap and
// throws, so the caller reopens from S.next rather than skip anything,
// unless it is an omission notice for a range that starts at S.next.
function add(entries) {
  let added = 0;
  for (const e of entries) {
    if (S.done || typeof e.offset !== 'number' || e.offset < S.next) continue;
    const o = omission(e);
    if (e.offset > S.next && !(o && o.from === S.next)) throw new Gap(`expected offset ${S.next}, got ${e.offset}`);
    const i = S.E.length;
    S.E.push(e);
    S.T.push(parseTime(e.timestamp));
    S.N.push(o ? 1 : messageLines(e).length);
    S.next = e.offset + 1;
    // G is -2 for a notice: in no group (a divider shows even inside a
    // collapsed one), and the group in progress goes on after it.
    let g = -1;
    if (o) {
      g = -2;
      S.notices.push(i);
    } else if (isTerminal(e)) {
      S.done = true;
      S.terminal = i;
    } else {
      const key = groupKey(e);
      const prev = S.curG;
      // An entry without phase or step belongs to the group in progress:
      // it is output printed while that step ran.
      if (prev >= 0 && (key === null || key === S.groups[prev].key)) g = prev;
      else if (key !== null) { g = S.groups.length; S.groups.push(newGroup(key, e, i)); }
      if (g >= 0) updateGroup(S.groups[g], e, i);
      S.curG = g;
    }
    S.G.push(g);
    pushRows(i);
    if (S.query && shown(i) && matchText(i).includes(S.query)) S.matches.push(i);
    added++;
  }
  if (added) {
    if (S.build && S.build.status === 'queued') S.build.status = 'building';
    if (S.sel < 0 && pendingHash >= 0 && pendingHash < S.next) gotoHash();
    dirty(true);
  }
  return added;
}

// ---- outcome of groups ----

function groupEnd(gi) {
  const g = S.groups[gi];
  const nextG = S.groups[gi + 1];
  if (nextG) return S.T[nextG.first];
  if (S.done) return S.T[S.terminal];
  if (S.build && terminalStatuses.includes(S.build.status)) return S.T[g.last];
  return Date.now();
}

function outcome(gi) {
  const g = S.groups[gi];
  const last = gi === S.groups.length - 1;
  const status = S.build ? S.build.status : '';
  if (last && S.done && status && status !== 'ready' && terminalStatuses.includes(status)) return status;
  if (g.errInAttempt) return 'failed';
  if (last && !S.done && !terminalStatuses.includes(status)) return 'running';
  return 'ok';
}

const outcomeMark = { ok: '✓', failed: '✗', running: '●', cancelled: '⊘', timeout: '⏱' };

function groupLabel(g) {
  const parts = [];
  if (g.phase) parts.push('[' + g.phase + ']');
  if (g.step != null) parts.push('step ' + g.step + '/' + (g.total ?? (S.build && S.build.total_steps) ?? '?'));
  return parts.join(' ');
}

function badges(g, into) {
  for (const [status] of g.cache) into.append(h('span', 'bd bd-' + status, 'cache ' + status));
  const max = g.maxAttempts || (S.build && S.build.max_attempts) || 0;
  if (g.attempt > 1) into.append(h('span', 'bd bd-attempt', 'attempt ' + g.attempt + (max ? '/' + max : '')));
  if (g.errors) into.append(h('span', 'bd bd-err', g.errors + (g.errors === 1 ? ' error' : ' errors')));
  if (g.warns) into.append(h('span', 'bd bd-warn', g.warns + (g.warns === 1 ? ' warning' : ' warnings')));
}

// ---- rendering the log ----

let renderQueued = false;
let rowsDirty = true;
let lastRange = '';
let programmaticTop = -1;

function dirty(newData) {
  rowsDirty = true;
  if (newData) headerDirty = true;
  schedule();
}

function schedule() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(render);
}

function render() {
  renderQueued = false;
  const total = S.rowE.length;
  el.spacer.style.height = total * ROW_H + 'px';
  if (S.follow) {
    el.log.scrollTop = el.log.scrollHeight;
    programmaticTop = el.log.scrollTop;
  }
  const top = el.log.scrollTop;
  const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
  const last = Math.min(total, Math.ceil((top + el.log.clientHeight) / ROW_H) + OVERSCAN);
  const range = first + ':' + last;
  if (rowsDirty || range !== lastRange) {
    const frag = document.createDocumentFragment();
    for (let r = first; r < last; r++) frag.append(renderRow(r));
    el.rows.style.transform = 'translateY(' + first * ROW_H + 'px)';
    el.rows.replaceChildren(frag);
    lastRange = range;
    rowsDirty = false;
  }
  if (headerDirty) renderHeader();
}

function clock(ms) {
  if (isNaN(ms)) return '';
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
}

function renderRow(r) {
  const i = S.rowE[r];
  if (i < 0) return renderGroupRow(-1 - i);
  if (S.G[i] === -2) return renderOmission(i);
  const e = S.E[i];
  const line = S.rowL[r];
  let cls = 'row lvl-' + (levelRank[e.level] != null ? e.level : 'info');
  if (S.G[i] >= 0) cls += ' in-group';
  if (i === S.terminal) cls += ' terminal t-' + terminalStatus();
  if (i === S.sel) cls += ' sel';
  if (S.cur >= 0 && S.matches[S.cur] === i) cls += ' cur-match';
  const row = h('div', cls);
  row.dataset.offset = e.offset;
  if (line === 0) {
    const ln = h('a', 'ln', String(e.offset));
    ln.href = '#L' + e.offset;
    const ts = h('span', 'ts', clock(S.T[i]));
    ts.title = e.timestamp;
    row.append(ln, ts);
    if (e.phase) row.append(h('span', 'ph', '[' + e.phase + ']'));
    if (e.step_index != null) row.append(h('span', 'st', 'step ' + e.step_index + '/' + (e.total_steps ?? '?')));
    if (e.attempt != null && (e.attempt > 1 || e.kind === 'retry')) {
      row.append(h('span', 'bd bd-attempt', 'attempt ' + e.attempt + (e.max_attempts ? '/' + e.max_attempts : '')));
    }
    if (e.cache_status) row.append(h('span', 'bd bd-' + e.cache_status, 'cache ' + e.cache_status));
    if (e.source) row.title = 'source: ' + e.source;
  } else {
    row.append(h('span', 'ln'), h('span', 'ts'));
  }
  const msg = h('span', 'msg');
  const text = S.N[i] === 1 ? String(e.message ?? '') : messageLines(e)[line];
  for (const seg of parse(text)) {
    const span = seg.style ? h('span') : null;
    if (span) styleSpan(span, seg.style);
    appendMarked(span || msg, seg.text);
    if (span) msg.append(span);
  }
  row.append(msg);
  return row;
}

// renderOmission draws a notice as a divider across the log. Its
// permalink is the notice's offset, the last of the range; any offset of
// the range selects it.
function renderOmission(i) {
  const e = S.E[i];
  const o = omission(e);
  let cls = 'row omitted';
  if (i === S.sel) cls += ' sel';
  if (S.cur >= 0 && S.matches[S.cur] === i) cls += ' cur-match';
  const row = h('div', cls);
  row.dataset.offset = e.offset;
  row.title = e.message + '\n(offsets ' + o.from + '–' + o.to + ')';
  const ln = h('a', 'ln', '⋮');
  ln.href = '#L' + e.offset;
  const msg = h('span', 'msg');
  appendMarked(msg, omissionText(o));
  row.append(ln, h('span', 'rule'), msg, h('span', 'rule'));
  return row;
}

// appendMarked appends text, with the search query's occurrences in <mark>.
function appendMarked(parent, text) {
  if (!S.query) { parent.append(text); return; }
  const low = text.toLowerCase();
  let at = 0;
  for (let k; (k = low.indexOf(S.query, at)) >= 0; at = k + S.query.length) {
    if (k > at) parent.append(text.slice(at, k));
    parent.append(h('mark', null, text.slice(k, k + S.query.length)));
  }
  if (at < text.length) parent.append(text.slice(at));
}

function renderGroupRow(gi) {
  const g = S.groups[gi];
  const o = outcome(gi);
  const row = h('div', 'row group o-' + o);
  row.dataset.group = gi;
  row.append(h('span', 'ln'), h('span', 'tw', g.collapsed ? '▸' : '▾'), h('span', 'outcome', outcomeMark[o]));
  row.append(h('span', 'gt', groupLabel(g)));
  if (g.subject) row.append(h('span', 'gt gs', g.subject));
  badges(g, row);
  row.append(h('span', 'dur', duration(groupEnd(gi) - S.T[g.first])));
  row.title = (g.collapsed ? 'Expand' : 'Collapse') + ' (' + fmtCount(g.n) + ' entries)';
  return row;
}

// ---- header, timeline, status ----

let headerDirty = true;
let timelineAt = 0;
let timelineTimer = 0;

function terminalStatus() {
  if (S.build && terminalStatuses.includes(S.build.status)) return S.build.status;
  const e = S.E[S.terminal];
  if (!e) return '';
  if (e.kind === 'cancelled') return 'cancelled';
  return e.level === 'error' ? 'failed' : 'ready';
}

function renderHeader() {
  headerDirty = false;
  const b = S.build;
  if (!b) return;
  const status = S.done ? terminalStatus() : b.status;
  setStatus(el.status, status);
  document.title = buildID + ' · ' + status + ' · buildlog';
  let tmpl = b.template_id;
  if (b.namespace || b.name) tmpl += ' (' + [b.namespace, b.name].filter(Boolean).join('/') + (b.version ? '@' + b.version : '') + ')';
  el.template.textContent = tmpl;
  el.created.textContent = fmtTime(b.created_at);
  const omitted = S.notices.reduce((n, i) => n + omission(S.E[i]).entries, 0);
  el.count.textContent = fmtCount(S.E.length - S.notices.length) + (omitted ? ' (' + fmtCount(omitted) + ' omitted)' : '');
  const stepGroups = S.groups.filter(g => g.step != null);
  const total = b.total_steps ?? stepGroups.reduce((m, g) => Math.max(m, g.total ?? 0), 0);
  el.steps.textContent = stepGroups.length ? new Set(stepGroups.map(g => g.step)).size + (total ? '/' + total : '') : '–';
  updateElapsed();
  renderTerminal(status);
  // The timeline is cheap but not free; live updates redraw it at most
  // twice a second.
  const now = performance.now();
  if (now - timelineAt > 500 || S.done) { timelineAt = now; renderTimeline(); }
  else if (!timelineTimer) timelineTimer = setTimeout(() => { timelineTimer = 0; headerDirty = true; schedule(); }, 500);
}

function startTime() {
  const b = S.build;
  const t = b && (b.started_at || b.created_at) ? Date.parse(b.started_at || b.created_at) : NaN;
  return isNaN(t) ? S.T[0] : Math.min(t, S.T[0] ?? t);
}

function endTime() {
  if (S.done) return S.T[S.terminal];
  const b = S.build;
  if (b && b.finished_at) return Date.parse(b.finished_at);
  return Date.now();
}

// totalTime is the build's own duration (see buildTotal); between the
// terminal entry and the re-read build that carries finished_at, the
// terminal entry's time stands in for it.
function totalTime() {
  const b = S.build;
  if (S.done && !b.finished_at) return S.T[S.terminal] - Date.parse(b.created_at);
  return buildTotal(b, Date.now());
}

function updateElapsed() {
  const b = S.build;
  if (!b) return;
  const fin = S.done || terminalStatuses.includes(b.status);
  el.elapsedLabel.textContent = b.status === 'queued' && !S.E.length ? 'queued' : fin ? 'total' : 'elapsed';
  el.elapsed.textContent = duration(totalTime());
}

function renderTerminal(status) {
  if (!S.done) { el.terminal.hidden = true; return; }
  const e = S.E[S.terminal];
  el.terminal.className = 't-' + status;
  const titles = { ready: '✓ Ready', failed: '✗ Failed', cancelled: '⊘ Cancelled', timeout: '⏱ Timed out' };
  const parts = [h('div', 't-title', (titles[status] || status) + ' after ' + duration(totalTime()) + ': ' + strip(String(e.message)))];
  if (status !== 'ready') {
    const failed = S.groups.map((g, gi) => gi).filter(gi => outcome(gi) !== 'ok');
    if (failed.length) {
      const gi = failed[failed.length - 1];
      const g = S.groups[gi];
      const p = h('div', 't-where', 'in ');
      const a = h('a', null, groupLabel(g) + (g.subject ? ' ' + g.subject : ''));
      a.href = '#L' + S.E[g.first].offset;
      p.append(a);
      parts.push(p);
    }
  }
  const detail = e.error_detail && Object.keys(e.error_detail).length ? e.error_detail : null;
  if (detail) parts.push(h('pre', 't-detail', JSON.stringify(detail, null, 2)));
  if (status === 'ready' && e.result && Object.keys(e.result).length) parts.push(h('pre', 't-result', JSON.stringify(e.result, null, 2)));
  el.terminal.replaceChildren(...parts);
  el.terminal.hidden = false;
}

const MAX_TIMELINE = 300;

function renderTimeline() {
  if (!S.groups.length) return;
  const t0 = startTime();
  const span = Math.max(1, endTime() - t0);
  const frag = document.createDocumentFragment();
  const n = Math.min(S.groups.length, MAX_TIMELINE);
  for (let gi = 0; gi < n; gi++) {
    const g = S.groups[gi];
    const start = S.T[g.first], end = groupEnd(gi);
    const o = outcome(gi);
    const row = h('div', 'tl-row');
    row.dataset.group = gi;
    const label = h('span', 'tl-label', groupLabel(g) + (g.subject ? ' ' + g.subject : ''));
    const track = h('div', 'tl-track');
    const bar = h('div', 'tl-bar o-' + (o === 'ok' && g.warns ? 'warn' : o));
    bar.style.left = (100 * (start - t0) / span).toFixed(3) + '%';
    bar.style.width = (100 * Math.max(0, end - start) / span).toFixed(3) + '%';
    track.append(bar);
    const dur = duration(end - start);
    row.title = groupLabel(g) + ' ' + g.subject + '\n' + dur + ' · ' + o + (g.attempt > 1 ? ' · attempt ' + g.attempt : '');
    row.append(label, track, h('span', 'tl-dur', dur));
    frag.append(row);
  }
  if (S.groups.length > n) frag.append(h('p', 'empty', fmtCount(S.groups.length - n) + ' more groups not charted'));
  el.timeline.replaceChildren(frag);
}

function setConn(text, cls) {
  el.conn.textContent = text;
  el.conn.className = 'conn' + (cls ? ' ' + cls : '');
}

function showError(msg) {
  el.error.textContent = msg;
  el.error.hidden = !msg;
}

// ---- loading ----

// backlog reads what is stored past S.next in JSON pages; it returns when
// it reaches the end of what is stored. The next page is fetched while
// this one is added, so the network and the page's work overlap.
async function backlog() {
  const fetchPage = from => withKey(() => api(buildPath + '/logs?offset=' + from + '&limit=' + PAGE));
  let pending = fetchPage(S.next);
  for (;;) {
    if (S.build && S.build.next_offset > S.next + PAGE) {
      setConn('loading ' + fmtCount(S.next) + ' / ' + fmtCount(S.build.next_offset));
    }
    const p = await pending;
    const more = !p.done && p.entries.length >= PAGE;
    if (more) {
      pending = fetchPage(p.next_offset);
      pending.catch(() => { /* reported when awaited */ });
    }
    try {
      add(p.entries);
    } catch (err) {
      if (more) pending.catch(() => {});
      throw err;
    }
    if (!more || S.done) return;
  }
}

async function refreshBuild() {
  S.build = await withKey(() => api(buildPath));
  headerDirty = true;
  schedule();
}

// stream follows the build live from S.next through an EventSource.
async function stream() {
  if (S.done) return finished();
  setConn('connecting…', 'retry');
  let tok;
  try {
    tok = await withKey(() => api(buildPath + '/stream-token', { method: 'POST' }));
  } catch (err) {
    return retryLater(err);
  }
  const url = apiBase + buildPath + '/logs?follow=true&offset=' + S.next + '&token=' + encodeURIComponent(tok.token);
  const es = new EventSource(url);
  S.es = es;
  es.onopen = () => { S.retries = 0; setConn('live', 'live'); showError(''); };
  es.addEventListener('log', ev => {
    if (S.es !== es) return;
    let e;
    try { e = JSON.parse(ev.data); } catch { return; }
    try {
      add([e]);
    } catch (err) {
      if (!(err instanceof Gap)) throw err;
      es.close();
      S.es = null;
      retryLater(err);
      return;
    }
    if (S.done) {
      es.close();
      S.es = null;
      finished();
    }
  });
  // The browser would reconnect by itself with Last-Event-ID, but with the
  // offset and token in the URL: the first would replay from the old
  // offset and the second may have expired. So every drop, and the 204
  // past the end, closes this one and reopens from S.next with a new token.
  es.onerror = () => {
    if (S.es !== es) return;
    es.close();
    S.es = null;
    retryLater();
  };
}

function retryLater(err) {
  if (S.done) return;
  clearTimeout(S.retryTimer);
  const delay = Math.min(5000, 300 * 2 ** S.retries) * (0.8 + 0.4 * Math.random());
  S.retries++;
  setConn('reconnecting in ' + duration(delay) + '…', 'retry');
  if (err && !(err instanceof APIError && err.status === 0)) showError(String(err.message || err));
  S.retryTimer = setTimeout(resume, delay);
}

// resume reconnects after a drop: it reads the build (to notice that it
// ended while we were away), catches up in pages, then follows again.
async function resume() {
  try {
    await refreshBuild();
    if (S.build.next_offset > S.next) await backlog();
  } catch (err) {
    return retryLater(err);
  }
  if (S.done) return finished();
  if (terminalStatuses.includes(S.build.status) && S.next >= S.build.next_offset) return finished();
  stream();
}

async function finished() {
  setConn('');
  clearTimeout(S.retryTimer);
  try { await refreshBuild(); } catch { /* the terminal entry already says how it ended */ }
  headerDirty = true;
  dirty();
}

async function main() {
  el.id.textContent = buildID;
  forgetButton($('t-forget'));
  setStatus(el.status, 'loading');
  await keyOrAsk();
  try {
    await refreshBuild();
  } catch (err) {
    if (err instanceof APIError && err.status === 404) {
      setStatus(el.status, 'not found');
      showError('No build ' + buildID + ' (or it belongs to another team).');
      return;
    }
    return retryLater(err);
  }
  setConn('loading…');
  try {
    await backlog();
  } catch (err) {
    return retryLater(err);
  }
  if (S.done) return finished();
  stream();
}

// ---- interaction ----

function setFollow(on) {
  S.follow = on;
  el.follow.setAttribute('aria-pressed', String(on));
  if (on) {
    S.sel = -1;
    dirty();
  }
}

el.follow.addEventListener('click', () => setFollow(!S.follow));

el.log.addEventListener('scroll', () => {
  // Content only grows at the bottom, so a scroll position above the one
  // follow mode last set was the user's doing.
  if (S.follow && el.log.scrollTop < programmaticTop - 4) setFollow(false);
  schedule();
}, { passive: true });

el.log.addEventListener('click', ev => {
  const row = ev.target.closest('.row.group');
  if (!row) return;
  const g = S.groups[+row.dataset.group];
  g.collapsed = !g.collapsed;
  rebuildRows();
});

el.timeline.addEventListener('click', ev => {
  const row = ev.target.closest('.tl-row');
  if (!row) return;
  const g = S.groups[+row.dataset.group];
  const hash = '#L' + S.E[g.first].offset;
  if (location.hash === hash) gotoHash(); else location.hash = hash;
});

el.ts.checked = localStorage.getItem('buildlog.timestamps') !== 'off';
document.body.classList.toggle('no-ts', !el.ts.checked);
el.ts.addEventListener('change', () => {
  document.body.classList.toggle('no-ts', !el.ts.checked);
  try { localStorage.setItem('buildlog.timestamps', el.ts.checked ? 'on' : 'off'); } catch { /* not kept */ }
});

el.level.addEventListener('change', () => {
  S.minLevel = levelRank[el.level.value] ?? 0;
  rebuildRows();
  recomputeMatches();
});

$('t-collapse').addEventListener('click', () => {
  S.collapseNew = true;
  S.groups.forEach(g => { g.collapsed = true; });
  rebuildRows();
});
$('t-expand').addEventListener('click', () => {
  S.collapseNew = false;
  S.groups.forEach(g => { g.collapsed = false; });
  rebuildRows();
});

// rowOf returns the display row of entry i, expanding its group and
// clearing a level filter that hides it; -1 if i is not held.
function rowOf(i) {
  if (i < 0 || i >= S.E.length) return -1;
  const g = S.G[i];
  let rebuild = false;
  if (g >= 0 && S.groups[g].collapsed) { S.groups[g].collapsed = false; rebuild = true; }
  if (!shown(i)) { el.level.value = 'debug'; S.minLevel = 0; rebuild = true; }
  if (rebuild) rebuildRows();
  // Rows are in entry order, so a binary search over entry rows finds it.
  let lo = 0, hi = S.rowE.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    let r = mid;
    while (r <= hi && S.rowE[r] < 0) r++; // skip group headers
    if (r > hi) { hi = mid - 1; continue; }
    const v = S.rowE[r];
    if (v === i) { while (r > 0 && S.rowE[r - 1] === i) r--; return r; }
    if (v < i) lo = r + 1; else hi = mid - 1;
  }
  return -1;
}

function reveal(r) {
  setFollow(false);
  const top = r * ROW_H;
  const view = el.log.clientHeight;
  if (top < el.log.scrollTop || top + ROW_H > el.log.scrollTop + view) {
    el.log.scrollTop = Math.max(0, top - Math.floor(view / 3));
  }
  dirty();
}

// Permalinks: #L123 selects offset 123; if it has not arrived yet, the
// selection waits for it.
let pendingHash = -1;
function gotoHash() {
  const m = /^#L(\d+)$/.exec(location.hash);
  if (!m) { pendingHash = -1; S.sel = -1; dirty(); return; }
  const off = Number(m[1]);
  if (off >= S.next) { pendingHash = off; setFollow(false); return; }
  pendingHash = -1;
  const i = indexAt(off);
  const r = rowOf(i);
  if (r < 0) return;
  S.sel = i;
  reveal(r);
}
window.addEventListener('hashchange', gotoHash);
if (/^#L\d+$/.test(location.hash)) { pendingHash = Number(location.hash.slice(2)); S.follow = false; el.follow.setAttribute('aria-pressed', 'false'); }

function matchText(i) {
  let s = S.low[i];
  if (s === undefined) s = S.low[i] = strip(String(S.E[i].message ?? '')).toLowerCase();
  return s;
}

function recomputeMatches() {
  S.matches = [];
  S.cur = -1;
  if (S.query) {
    for (let i = 0; i < S.E.length; i++) if (shown(i) && matchText(i).includes(S.query)) S.matches.push(i);
  }
  updateHits();
  dirty();
}

function updateHits() {
  el.hits.textContent = !S.query ? '' : S.matches.length ? (S.cur >= 0 ? S.cur + 1 : 0) + ' / ' + fmtCount(S.matches.length) : 'no match';
}

function step(dir) {
  if (!S.matches.length) return;
  if (S.cur < 0) {
    // Start from what is on screen: the first match below the top row.
    const r = Math.floor(el.log.scrollTop / ROW_H);
    let i = S.rowE[Math.min(r, S.rowE.length - 1)] ?? 0;
    if (i < 0) i = S.groups[-1 - i].first;
    let k = S.matches.findIndex(m => m >= i);
    if (k < 0) k = 0;
    S.cur = dir > 0 ? k : (k - 1 + S.matches.length) % S.matches.length;
  } else {
    S.cur = (S.cur + dir + S.matches.length) % S.matches.length;
  }
  updateHits();
  const r = rowOf(S.matches[S.cur]);
  if (r >= 0) reveal(r);
}

let searchTimer = 0;
el.search.addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    S.query = el.search.value.toLowerCase();
    recomputeMatches();
  }, 120);
});
el.search.addEventListener('keydown', ev => {
  if (ev.key !== 'Enter') return;
  ev.preventDefault();
  clearTimeout(searchTimer);
  const q = el.search.value.toLowerCase();
  if (q !== S.query) { S.query = q; recomputeMatches(); }
  step(ev.shiftKey ? -1 : 1);
});
$('t-next').addEventListener('click', () => step(1));
$('t-prev').addEventListener('click', () => step(-1));

document.addEventListener('keydown', ev => {
  if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
  if (ev.key === 'End') setFollow(true);
  else if (ev.key === '/' ) { ev.preventDefault(); el.search.focus(); }
});

// ---- downloads: built from the entries the page holds (the whole log
// once it has loaded) ----

function download(name, type, parts) {
  const url = URL.createObjectURL(new Blob(parts, { type }));
  const a = h('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

const safeName = buildID.replace(/[^A-Za-z0-9_.-]/g, '_');

// rawText is the log as text, one entry a line: timestamp, level, phase,
// step and the message exactly as stored (ANSI sequences included, as a
// terminal would want them).
function rawText(i) {
  const e = S.E[i];
  let s = e.timestamp + ' ' + String(e.level).toUpperCase().padEnd(5);
  if (e.phase) s += ' [' + e.phase + ']';
  if (e.step_index != null) s += ' step ' + e.step_index + '/' + (e.total_steps ?? '?');
  return s + ' ' + e.message + '\n';
}

$('t-raw').addEventListener('click', () => download(safeName + '.log', 'text/plain', S.E.map((_, i) => rawText(i))));
$('t-ndjson').addEventListener('click', () => download(safeName + '.ndjson', 'application/x-ndjson', S.E.map(e => JSON.stringify(e) + '\n')));

window.addEventListener('resize', schedule);
setInterval(() => {
  // Elapsed time and the running group's duration tick while live.
  if (S.build && !S.done && !terminalStatuses.includes(S.build.status)) { headerDirty = true; rowsDirty = true; schedule(); }
}, 1000);

main().catch(err => showError(String(err && err.message || err)));
