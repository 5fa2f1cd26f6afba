// Reading one build's log into a Log: the stored backlog in JSON pages of
// up to 10,000 entries (Accept: application/json, with the API key), then
// an EventSource on dialect A for live entries with a per-build stream
// token. A drop of any kind goes through one path: close, back off, re-read
// the build, catch up in pages, open a new stream from the next offset.

import { api, apiBase, withKey, APIError, duration, fmtCount, terminalStatuses } from './common.js';
import { Gap } from './model.js';

const PAGE = 10000; // the API's largest JSON page

// Follower keeps log up to date with build buildPath. The callbacks:
// onBuild(build) when the build was (re-)read, onEntries() when entries
// were added, onConn(text, cls) for the connection state, onError(msg)
// for a message to show ('' clears it), onEnd() once nothing more will
// come.
export class Follower {
  constructor(buildPath, log, { onBuild, onEntries, onConn, onError, onEnd }) {
    this.path = buildPath;
    this.log = log;
    this.build = null;
    Object.assign(this, { onBuild, onEntries, onConn, onError, onEnd });
    this.es = null;
    this.retries = 0;
    this.retryTimer = 0;
  }

  // start reads the build and follows it. A build that does not exist
  // (or is another team's) rejects with the API's 404; anything else is
  // retried.
  async start() {
    try {
      await this.refreshBuild();
    } catch (err) {
      if (err instanceof APIError && err.status === 404) throw err;
      return this.retryLater(err);
    }
    this.onConn('loading…');
    return this.catchUpAndFollow();
  }

  async refreshBuild() {
    this.build = await withKey(() => api(this.path));
    this.onBuild(this.build);
  }

  add(entries) {
    if (this.log.add(entries)) this.onEntries();
  }

  // backlog reads what is stored past log.next in JSON pages; it returns
  // when it reaches the end of what is stored. The next page is fetched
  // while this one is added, so the network and the page's work overlap.
  async backlog() {
    const log = this.log;
    const fetchPage = from => withKey(() => api(this.path + '/logs?offset=' + from + '&limit=' + PAGE));
    let pending = fetchPage(log.next);
    for (;;) {
      if (this.build && this.build.next_offset > log.next + PAGE) {
        this.onConn('loading ' + fmtCount(log.next) + ' / ' + fmtCount(this.build.next_offset));
      }
      const p = await pending;
      const more = !p.done && p.entries.length >= PAGE;
      if (more) {
        pending = fetchPage(p.next_offset);
        pending.catch(() => { /* reported when awaited */ });
      }
      this.add(p.entries);
      if (!more || log.done) return;
    }
  }

  // catchUpAndFollow is every (re)connection: the stored entries past
  // what is held, then the stream, unless the build is over.
  async catchUpAndFollow() {
    try {
      if (this.log.next === 0 || this.build.next_offset > this.log.next) await this.backlog();
    } catch (err) {
      return this.retryLater(err);
    }
    if (this.log.done) return this.finished();
    if (terminalStatuses.includes(this.build.status) && this.log.next >= this.build.next_offset) return this.finished();
    return this.stream();
  }

  // stream follows the build live from log.next through an EventSource.
  async stream() {
    this.onConn('connecting…', 'retry');
    let tok;
    try {
      tok = await withKey(() => api(this.path + '/stream-token', { method: 'POST' }));
    } catch (err) {
      return this.retryLater(err);
    }
    const url = apiBase + this.path + '/logs?follow=true&offset=' + this.log.next + '&token=' + encodeURIComponent(tok.token);
    const es = new EventSource(url);
    this.es = es;
    const drop = err => {
      es.close();
      if (this.es === es) this.es = null;
      if (err !== undefined) this.retryLater(err);
    };
    es.onopen = () => { this.retries = 0; this.onConn('live', 'live'); this.onError(''); };
    es.addEventListener('log', ev => {
      if (this.es !== es) return;
      let e;
      try { e = JSON.parse(ev.data); } catch { return; }
      try {
        this.add([e]);
      } catch (err) {
        if (!(err instanceof Gap)) throw err;
        return drop(err);
      }
      if (this.log.done) {
        drop();
        this.finished();
      }
    });
    // The browser would reconnect by itself with Last-Event-ID, but with
    // the offset and token in the URL: the first would replay from the
    // old offset and the second may have expired. So every drop, and the
    // 204 past the end, closes this one and reopens from log.next with a
    // new token.
    es.onerror = () => {
      if (this.es === es) drop(null);
    };
  }

  retryLater(err) {
    if (this.log.done) return;
    clearTimeout(this.retryTimer);
    const delay = Math.min(5000, 300 * 2 ** this.retries) * (0.8 + 0.4 * Math.random());
    this.retries++;
    this.onConn('reconnecting in ' + duration(delay) + '…', 'retry');
    if (err && !(err instanceof APIError && err.status === 0)) this.onError(String(err.message || err));
    this.retryTimer = setTimeout(() => this.resume(), delay);
  }

  // resume reconnects after a drop: it reads the build (to notice that it
  // ended while we were away), catches up in pages, then follows again.
  async resume() {
    try {
      await this.refreshBuild();
    } catch (err) {
      return this.retryLater(err);
    }
    return this.catchUpAndFollow();
  }

  async finished() {
    this.onConn('');
    clearTimeout(this.retryTimer);
    try { await this.refreshBuild(); } catch { /* the terminal entry already says how it ended */ }
    this.onEnd();
  }
}
