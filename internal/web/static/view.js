// Drawing one build's page from its Log: the virtualised rows (the DOM
// holds only the rows in view plus a margin, so 100,000 entries cost
// about 100 elements), the header, the terminal banner and the timeline.
// Drawing happens once per animation frame, however many changes asked
// for it.

import { parse, strip, styleSpan } from './ansi.js';
import { h, duration, setStatus, fmtCount, fmtTime } from './common.js';
import { levelRank, terminalStatuses, buildTotal, omission, omissionText, groupLabel, messageLines } from './model.js';

export const ROW_H = 18; // px; the same as --row-h in console.css
const OVERSCAN = 30; // rows rendered above and below the viewport
const MAX_TIMELINE = 300;

const outcomeMark = { ok: '✓', failed: '✗', running: '●', cancelled: '⊘', timeout: '⏱' };
const titles = { ready: '✓ Ready', failed: '✗ Failed', cancelled: '⊘ Cancelled', timeout: '⏱ Timed out' };

function clock(ms) {
  if (isNaN(ms)) return '';
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
}

// View draws log into the page's elements el. ui is the state the
// interaction changes: follow (keep the newest row in view), sel (the
// entry index a permalink selects, -1 for none) and cur (the current
// search match, an index into log.matches, -1 for none).
export class View {
  constructor(el, log, ui, buildID) {
    Object.assign(this, { el, log, ui, buildID });
    this.build = null;
    this.queued = false;
    this.rowsDirty = true;
    this.headerDirty = true;
    this.lastRange = '';
    // The scrollTop follow mode last set: a position above it was the
    // user's doing.
    this.programmaticTop = -1;
    this.timelineAt = 0;
    this.timelineTimer = 0;
  }

  // dirty asks for the rows to be redrawn, and with newData the header.
  dirty(newData) {
    this.rowsDirty = true;
    if (newData) this.headerDirty = true;
    this.schedule();
  }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => this.render());
  }

  // status is the build's, or how it ended once the terminal entry is held.
  status() {
    const b = this.build;
    return this.log.done ? this.log.terminalStatus(b && b.status) : b ? b.status : '';
  }

  render() {
    this.queued = false;
    const { el, log, ui } = this;
    const total = log.rowE.length;
    el.spacer.style.height = total * ROW_H + 'px';
    if (ui.follow) {
      el.log.scrollTop = el.log.scrollHeight;
      this.programmaticTop = el.log.scrollTop;
    }
    const top = el.log.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(total, Math.ceil((top + el.log.clientHeight) / ROW_H) + OVERSCAN);
    const range = first + ':' + last;
    if (this.rowsDirty || range !== this.lastRange) {
      const frag = document.createDocumentFragment();
      for (let r = first; r < last; r++) frag.append(this.renderRow(r));
      el.rows.style.transform = 'translateY(' + first * ROW_H + 'px)';
      el.rows.replaceChildren(frag);
      this.lastRange = range;
      this.rowsDirty = false;
    }
    if (this.headerDirty) this.renderHeader();
  }

  rowClass(i, cls) {
    if (i === this.ui.sel) cls += ' sel';
    if (this.ui.cur >= 0 && this.log.matches[this.ui.cur] === i) cls += ' cur-match';
    return cls;
  }

  renderRow(r) {
    const log = this.log;
    const i = log.rowE[r];
    if (i < 0) return this.renderGroupRow(-1 - i);
    if (log.isNotice(i)) return this.renderOmission(i);
    const e = log.E[i];
    const line = log.rowL[r];
    let cls = 'row lvl-' + (levelRank[e.level] != null ? e.level : 'info');
    if (log.G[i] >= 0) cls += ' in-group';
    if (i === log.terminal) cls += ' terminal t-' + this.status();
    const row = h('div', this.rowClass(i, cls));
    row.dataset.offset = e.offset;
    if (line === 0) {
      const ln = h('a', 'ln', String(e.offset));
      ln.href = '#L' + e.offset;
      const ts = h('span', 'ts', clock(log.T[i]));
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
    const text = log.N[i] === 1 ? String(e.message ?? '') : messageLines(e)[line];
    for (const seg of parse(text)) {
      const span = seg.style ? h('span') : null;
      if (span) styleSpan(span, seg.style);
      this.appendMarked(span || msg, seg.text);
      if (span) msg.append(span);
    }
    row.append(msg);
    return row;
  }

  // renderOmission draws a notice as a divider across the log. Its
  // permalink is the notice's offset, the last of the range; any offset
  // of the range selects it.
  renderOmission(i) {
    const e = this.log.E[i];
    const o = omission(e);
    const row = h('div', this.rowClass(i, 'row omitted'));
    row.dataset.offset = e.offset;
    row.title = e.message + '\n(offsets ' + o.from + '–' + o.to + ')';
    const ln = h('a', 'ln', '⋮');
    ln.href = '#L' + e.offset;
    const msg = h('span', 'msg');
    this.appendMarked(msg, omissionText(o));
    row.append(ln, h('span', 'rule'), msg, h('span', 'rule'));
    return row;
  }

  // appendMarked appends text, with the search query's occurrences in <mark>.
  appendMarked(parent, text) {
    const q = this.log.query;
    if (!q) { parent.append(text); return; }
    const low = text.toLowerCase();
    let at = 0;
    for (let k; (k = low.indexOf(q, at)) >= 0; at = k + q.length) {
      if (k > at) parent.append(text.slice(at, k));
      parent.append(h('mark', null, text.slice(k, k + q.length)));
    }
    if (at < text.length) parent.append(text.slice(at));
  }

  label(g) { return groupLabel(g, this.build && this.build.total_steps); }

  badges(g, into) {
    for (const [status] of g.cache) into.append(h('span', 'bd bd-' + status, 'cache ' + status));
    const max = g.maxAttempts || (this.build && this.build.max_attempts) || 0;
    if (g.attempt > 1) into.append(h('span', 'bd bd-attempt', 'attempt ' + g.attempt + (max ? '/' + max : '')));
    if (g.errors) into.append(h('span', 'bd bd-err', g.errors + (g.errors === 1 ? ' error' : ' errors')));
    if (g.warns) into.append(h('span', 'bd bd-warn', g.warns + (g.warns === 1 ? ' warning' : ' warnings')));
  }

  groupEnd(gi) { return this.log.groupEnd(gi, this.build && this.build.status, Date.now()); }

  outcome(gi) { return this.log.outcome(gi, this.build ? this.build.status : ''); }

  renderGroupRow(gi) {
    const g = this.log.groups[gi];
    const o = this.outcome(gi);
    const row = h('div', 'row group o-' + o);
    row.dataset.group = gi;
    row.append(h('span', 'ln'), h('span', 'tw', g.collapsed ? '▸' : '▾'), h('span', 'outcome', outcomeMark[o]));
    row.append(h('span', 'gt', this.label(g)));
    if (g.subject) row.append(h('span', 'gt gs', g.subject));
    this.badges(g, row);
    row.append(h('span', 'dur', duration(this.groupEnd(gi) - this.log.T[g.first])));
    row.title = (g.collapsed ? 'Expand' : 'Collapse') + ' (' + fmtCount(g.n) + ' entries)';
    return row;
  }

  renderHeader() {
    this.headerDirty = false;
    const { el, log } = this;
    const b = this.build;
    if (!b) return;
    const status = this.status();
    setStatus(el.status, status);
    document.title = this.buildID + ' · ' + status + ' · buildlog';
    let tmpl = b.template_id;
    if (b.namespace || b.name) tmpl += ' (' + [b.namespace, b.name].filter(Boolean).join('/') + (b.version ? '@' + b.version : '') + ')';
    el.template.textContent = tmpl;
    el.created.textContent = fmtTime(b.created_at);
    const omitted = log.omitted();
    el.count.textContent = fmtCount(log.E.length - log.notices.length) + (omitted ? ' (' + fmtCount(omitted) + ' omitted)' : '');
    const stepGroups = log.groups.filter(g => g.step != null);
    const total = b.total_steps ?? stepGroups.reduce((m, g) => Math.max(m, g.total ?? 0), 0);
    el.steps.textContent = stepGroups.length ? new Set(stepGroups.map(g => g.step)).size + (total ? '/' + total : '') : '–';
    this.updateElapsed();
    this.renderTerminal(status);
    // The timeline is cheap but not free; live updates redraw it at most
    // twice a second.
    const now = performance.now();
    if (now - this.timelineAt > 500 || log.done) { this.timelineAt = now; this.renderTimeline(); }
    else if (!this.timelineTimer) this.timelineTimer = setTimeout(() => { this.timelineTimer = 0; this.headerDirty = true; this.schedule(); }, 500);
  }

  // startTime and endTime are the timeline's axis: from the build's start
  // (or its first entry, if earlier) to its end.
  startTime() {
    const b = this.build, T = this.log.T;
    const t = b && (b.started_at || b.created_at) ? Date.parse(b.started_at || b.created_at) : NaN;
    return isNaN(t) ? T[0] : Math.min(t, T[0] ?? t);
  }

  endTime() {
    const log = this.log;
    if (log.done) return log.T[log.terminal];
    const b = this.build;
    if (b && b.finished_at) return Date.parse(b.finished_at);
    return Date.now();
  }

  // totalTime is the build's own duration (see buildTotal); between the
  // terminal entry and the re-read build that carries finished_at, the
  // terminal entry's time stands in for it.
  totalTime() {
    const b = this.build, log = this.log;
    if (log.done && !b.finished_at) return log.T[log.terminal] - Date.parse(b.created_at);
    return buildTotal(b, Date.now());
  }

  updateElapsed() {
    const b = this.build;
    if (!b) return;
    const fin = this.log.done || terminalStatuses.includes(b.status);
    this.el.elapsedLabel.textContent = b.status === 'queued' && !this.log.E.length ? 'queued' : fin ? 'total' : 'elapsed';
    this.el.elapsed.textContent = duration(this.totalTime());
  }

  renderTerminal(status) {
    const { el, log } = this;
    if (!log.done) { el.terminal.hidden = true; return; }
    const e = log.E[log.terminal];
    el.terminal.className = 't-' + status;
    const parts = [h('div', 't-title', (titles[status] || status) + ' after ' + duration(this.totalTime()) + ': ' + strip(String(e.message)))];
    if (status !== 'ready') {
      const failed = log.groups.map((g, gi) => gi).filter(gi => this.outcome(gi) !== 'ok');
      if (failed.length) {
        const g = log.groups[failed[failed.length - 1]];
        const p = h('div', 't-where', 'in ');
        const a = h('a', null, this.label(g) + (g.subject ? ' ' + g.subject : ''));
        a.href = '#L' + log.E[g.first].offset;
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

  renderTimeline() {
    const log = this.log;
    if (!log.groups.length) return;
    const t0 = this.startTime();
    const span = Math.max(1, this.endTime() - t0);
    const frag = document.createDocumentFragment();
    const n = Math.min(log.groups.length, MAX_TIMELINE);
    for (let gi = 0; gi < n; gi++) {
      const g = log.groups[gi];
      const start = log.T[g.first], end = this.groupEnd(gi);
      const o = this.outcome(gi);
      const row = h('div', 'tl-row');
      row.dataset.group = gi;
      const label = h('span', 'tl-label', this.label(g) + (g.subject ? ' ' + g.subject : ''));
      const track = h('div', 'tl-track');
      const bar = h('div', 'tl-bar o-' + (o === 'ok' && g.warns ? 'warn' : o));
      bar.style.left = (100 * (start - t0) / span).toFixed(3) + '%';
      bar.style.width = (100 * Math.max(0, end - start) / span).toFixed(3) + '%';
      track.append(bar);
      const dur = duration(end - start);
      row.title = this.label(g) + ' ' + g.subject + '\n' + dur + ' · ' + o + (g.attempt > 1 ? ' · attempt ' + g.attempt : '');
      row.append(label, track, h('span', 'tl-dur', dur));
      frag.append(row);
    }
    if (log.groups.length > n) frag.append(h('p', 'empty', fmtCount(log.groups.length - n) + ' more groups not charted'));
    this.el.timeline.replaceChildren(frag);
  }

  setConn(text, cls) {
    this.el.conn.textContent = text;
    this.el.conn.className = 'conn' + (cls ? ' ' + cls : '');
  }

  showError(msg) {
    this.el.error.textContent = msg;
    this.el.error.hidden = !msg;
  }
}
