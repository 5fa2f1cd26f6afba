// What the user does on a build's page: follow, scrolling, collapsing
// groups, the timeline, the timestamps toggle, the level filter, search,
// permalinks (#L<offset>), keys and the downloads.

import { h } from './common.js';
import { levelRank, rawText } from './model.js';
import { ROW_H } from './view.js';

// Interaction wires the page's controls to view (and its log and ui).
export class Interaction {
  constructor(view, buildID) {
    this.view = view;
    this.log = view.log;
    this.ui = view.ui;
    this.el = view.el;
    this.buildID = buildID;
    this.pendingHash = -1; // a #L offset not held yet
    this.searchTimer = 0;
  }

  setFollow(on) {
    this.ui.follow = on;
    this.el.follow.setAttribute('aria-pressed', String(on));
    if (on) {
      this.ui.sel = -1;
      this.view.dirty();
    }
  }

  // entriesAdded is called when entries arrive: a permalink waiting for
  // its entry is resolved.
  entriesAdded() {
    if (this.ui.sel < 0 && this.pendingHash >= 0 && this.pendingHash < this.log.next) this.gotoHash();
  }

  // rowOf is log.rowOf, keeping the level control in step when showing
  // the entry cleared the filter.
  rowOf(i) {
    const r = this.log.rowOf(i);
    if (this.log.minLevel === 0) this.el.level.value = 'debug';
    this.view.dirty();
    return r;
  }

  reveal(r) {
    const log = this.el.log;
    this.setFollow(false);
    const top = r * ROW_H;
    const view = log.clientHeight;
    if (top < log.scrollTop || top + ROW_H > log.scrollTop + view) {
      log.scrollTop = Math.max(0, top - Math.floor(view / 3));
    }
    this.view.dirty();
  }

  // gotoHash: #L123 selects offset 123 (or the divider of the dropped
  // range that holds it); if it has not arrived yet, the selection waits
  // for it.
  gotoHash() {
    const m = /^#L(\d+)$/.exec(location.hash);
    if (!m) { this.pendingHash = -1; this.ui.sel = -1; this.view.dirty(); return; }
    const off = Number(m[1]);
    if (off >= this.log.next) { this.pendingHash = off; this.setFollow(false); return; }
    this.pendingHash = -1;
    const i = this.log.indexAt(off);
    const r = this.rowOf(i);
    if (r < 0) return;
    this.ui.sel = i;
    this.reveal(r);
  }

  updateHits() {
    const { log, ui } = this;
    this.el.hits.textContent = !log.query ? '' : log.matches.length ? (ui.cur >= 0 ? ui.cur + 1 : 0) + ' / ' + log.matches.length.toLocaleString('en-US') : 'no match';
  }

  search(q) {
    this.log.search(q);
    this.ui.cur = -1;
    this.updateHits();
    this.view.dirty();
  }

  step(dir) {
    const { log, ui } = this;
    const n = log.matches.length;
    if (!n) return;
    if (ui.cur < 0) {
      // Start from what is on screen: the first match below the top row.
      const i = log.entryAtRow(Math.floor(this.el.log.scrollTop / ROW_H));
      let k = log.matches.findIndex(m => m >= i);
      if (k < 0) k = 0;
      ui.cur = dir > 0 ? k : (k - 1 + n) % n;
    } else {
      ui.cur = (ui.cur + dir + n) % n;
    }
    this.updateHits();
    const r = this.rowOf(log.matches[ui.cur]);
    if (r >= 0) this.reveal(r);
  }

  download(name, type, parts) {
    const url = URL.createObjectURL(new Blob(parts, { type }));
    const a = h('a');
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // wire attaches the listeners; $ finds an element by id.
  wire($) {
    const { el, log, view } = this;
    el.follow.addEventListener('click', () => this.setFollow(!this.ui.follow));

    el.log.addEventListener('scroll', () => {
      // Content only grows at the bottom, so a scroll position above the
      // one follow mode last set was the user's doing.
      if (this.ui.follow && el.log.scrollTop < view.programmaticTop - 4) this.setFollow(false);
      view.schedule();
    }, { passive: true });

    el.log.addEventListener('click', ev => {
      const row = ev.target.closest('.row.group');
      if (!row) return;
      const gi = +row.dataset.group;
      log.setCollapsed(gi, !log.groups[gi].collapsed);
      view.dirty();
    });

    el.timeline.addEventListener('click', ev => {
      const row = ev.target.closest('.tl-row');
      if (!row) return;
      const g = log.groups[+row.dataset.group];
      const hash = '#L' + log.E[g.first].offset;
      if (location.hash === hash) this.gotoHash(); else location.hash = hash;
    });

    el.ts.checked = localStorage.getItem('buildlog.timestamps') !== 'off';
    document.body.classList.toggle('no-ts', !el.ts.checked);
    el.ts.addEventListener('change', () => {
      document.body.classList.toggle('no-ts', !el.ts.checked);
      try { localStorage.setItem('buildlog.timestamps', el.ts.checked ? 'on' : 'off'); } catch { /* not kept */ }
    });

    el.level.addEventListener('change', () => {
      log.setMinLevel(levelRank[el.level.value] ?? 0);
      this.ui.cur = -1;
      this.updateHits();
      view.dirty();
    });

    $('t-collapse').addEventListener('click', () => { log.setAllCollapsed(true); view.dirty(); });
    $('t-expand').addEventListener('click', () => { log.setAllCollapsed(false); view.dirty(); });

    window.addEventListener('hashchange', () => this.gotoHash());
    if (/^#L\d+$/.test(location.hash)) {
      this.pendingHash = Number(location.hash.slice(2));
      this.ui.follow = false;
      el.follow.setAttribute('aria-pressed', 'false');
    }

    el.search.addEventListener('input', () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.search(el.search.value.toLowerCase()), 120);
    });
    el.search.addEventListener('keydown', ev => {
      if (ev.key !== 'Enter') return;
      ev.preventDefault();
      clearTimeout(this.searchTimer);
      const q = el.search.value.toLowerCase();
      if (q !== log.query) this.search(q);
      this.step(ev.shiftKey ? -1 : 1);
    });
    $('t-next').addEventListener('click', () => this.step(1));
    $('t-prev').addEventListener('click', () => this.step(-1));

    document.addEventListener('keydown', ev => {
      if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
      if (ev.key === 'End') this.setFollow(true);
      else if (ev.key === '/') { ev.preventDefault(); el.search.focus(); }
    });

    // Downloads are built from the entries the page holds (the whole log
    // once it has loaded; omission notices included, as the API serves
    // them).
    const safeName = this.buildID.replace(/[^A-Za-z0-9_.-]/g, '_');
    $('t-raw').addEventListener('click', () => this.download(safeName + '.log', 'text/plain', log.E.map(rawText)));
    $('t-ndjson').addEventListener('click', () => this.download(safeName + '.ndjson', 'application/x-ndjson', log.E.map(e => JSON.stringify(e) + '\n')));

    window.addEventListener('resize', () => view.schedule());
  }
}
