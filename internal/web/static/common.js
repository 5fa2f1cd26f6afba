// Shared by the console pages: where the API is, the API key, small DOM
// and formatting helpers.

// apiBase is whatever precedes /console/ in this page's path, so the
// console keeps working behind a proxy that mounts buildlog under a prefix.
export const apiBase = location.pathname.slice(0, Math.max(0, location.pathname.indexOf('/console/')));

const keyName = 'buildlog.apiKey';

// The key lives in sessionStorage: it survives reloads of this tab, dies
// with it, and never appears in a URL, a Referer or the server's logs.
export function getKey() {
  try { return sessionStorage.getItem(keyName) || ''; } catch { return ''; }
}
export function setKey(k) { try { sessionStorage.setItem(keyName, k); } catch { /* storage disabled: keep it in memory only */ } memKey = k; }
export function forgetKey() { try { sessionStorage.removeItem(keyName); } catch { /* nothing stored */ } memKey = ''; }
let memKey = '';
export function currentKey() { return getKey() || memKey; }

// askKey shows the key form and resolves with what the user enters.
// why is shown above the field (e.g. why the previous key was refused).
// Calls while the form is open share its answer.
let asking = null;
export function askKey(why) {
  const dlg = document.getElementById('key-form');
  const msg = dlg.querySelector('.why');
  msg.textContent = why || '';
  msg.hidden = !why;
  if (asking) return asking;
  const input = dlg.querySelector('input');
  dlg.hidden = false;
  input.value = '';
  input.focus();
  asking = new Promise(resolve => {
    dlg.onsubmit = ev => {
      ev.preventDefault();
      const k = input.value.trim();
      if (!k) return;
      dlg.hidden = true;
      asking = null;
      setKey(k);
      resolve(k);
    };
  });
  return asking;
}

// keyOrAsk returns the stored key, asking for one when there is none.
export async function keyOrAsk() {
  return currentKey() || askKey('This console reads through the buildlog API: enter an API key with the read scope.');
}

// APIError is a failed API call: status is the HTTP status (0 when the
// server was not reached), code and message come from the JSON error body.
export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// api calls the API with the stored key (or none when opts.token is in
// the path) and returns the parsed JSON body.
export async function api(path, opts = {}) {
  const headers = { Accept: 'application/json', ...(opts.headers || {}) };
  if (opts.auth !== false) headers.Authorization = 'Bearer ' + currentKey();
  let res;
  try {
    res = await fetch(apiBase + path, { method: opts.method || 'GET', headers, body: opts.body, signal: opts.signal, cache: 'no-store' });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new APIError(0, 'unreachable', 'the server did not answer');
  }
  let body = null;
  try { body = await res.json(); } catch { /* an empty or non-JSON body */ }
  if (!res.ok) {
    const e = body && body.error;
    throw new APIError(res.status, e ? e.code : 'http_' + res.status, e ? e.message : res.statusText);
  }
  return body;
}

// withKey runs fn, asking for a key whenever the current one is missing or
// refused; other errors pass through.
export async function withKey(fn) {
  await keyOrAsk();
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof APIError) || (err.status !== 401 && err.status !== 403)) throw err;
      forgetKey();
      await askKey(`The server refused that key (${err.status}): ${err.message}`);
    }
  }
}

// h makes an element: h('span', 'cls', 'text'). Text goes in as a text
// node: log data never passes through an HTML parser.
export function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text != null) el.textContent = text;
  return el;
}

// duration renders milliseconds as 850ms, 12.3s, 4m 05s, 2h 03m.
export function duration(ms) {
  if (!(ms >= 0)) return '';
  if (ms < 1000) return Math.round(ms) + 'ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + 's';
  const m = Math.floor(s / 60);
  if (m < 60) return m + 'm ' + String(Math.floor(s % 60)).padStart(2, '0') + 's';
  return Math.floor(m / 60) + 'h ' + String(m % 60).padStart(2, '0') + 'm';
}

// Pure helpers shared with the model, which must not load this module
// (it reads location at load time; the model's tests run without a DOM).
export { terminalStatuses, buildTotal } from './model.js';

// setStatus shows a build status on a badge element.
export function setStatus(el, status) {
  el.textContent = status;
  el.className = 'badge status status-' + status;
  el.dataset.status = status;
}

export function fmtCount(n) { return n.toLocaleString('en-US'); }

export function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

// forgetButton wires a "forget key" control.
export function forgetButton(el) {
  el.addEventListener('click', () => { forgetKey(); location.reload(); });
}
