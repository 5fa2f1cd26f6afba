// The build list: /console/. Newest first, filtered by status and
// template, paged by the API's cursor, refreshed while the page is open.

import { api, withKey, keyOrAsk, APIError, h, duration, buildTotal, setStatus, fmtCount, fmtTime, terminalStatuses, forgetButton } from './common.js';

const $ = id => document.getElementById(id);
const tbody = $('builds').querySelector('tbody');
const more = $('l-more');
const status = $('f-status');
const template = $('f-template');
const auto = $('f-auto');

let cursor = '';
let pages = 0;
let loading = false;

function query(cur) {
  const q = new URLSearchParams({ limit: '50' });
  if (status.value) q.set('status', status.value);
  if (template.value.trim()) q.set('template_id', template.value.trim());
  if (cur) q.set('cursor', cur);
  return '/v1/templates/builds?' + q;
}

function row(b) {
  const tr = h('tr');
  tr.dataset.build = b.build_id;
  const badge = h('span');
  setStatus(badge, b.status);
  const link = h('a', 'build-link', b.build_id);
  link.href = 'builds/' + encodeURIComponent(b.build_id);
  let tmpl = b.template_id;
  if (b.namespace || b.name) tmpl += ' · ' + [b.namespace, b.name].filter(Boolean).join('/') + (b.version ? '@' + b.version : '');
  const ended = b.finished_at || terminalStatuses.includes(b.status);
  const dur = b.started_at || ended ? duration(buildTotal(b, Date.now())) + (ended ? '' : ' …') : '–';
  const cells = [badge, link, h('span', null, tmpl), h('span', null, fmtTime(b.created_at)), h('span', null, dur), h('span', null, fmtCount(b.entry_count ?? b.next_offset ?? 0))];
  cells.forEach((c, i) => {
    const td = h('td', i === 5 ? 'num' : null);
    td.append(c);
    tr.append(td);
  });
  return tr;
}

// load replaces the list with its first page (append=false) or adds the
// next page.
async function load(append) {
  if (loading) return;
  loading = true;
  try {
    const res = await withKey(() => api(query(append ? cursor : '')));
    const rows = res.builds.map(row);
    if (append) { tbody.append(...rows); pages++; } else { tbody.replaceChildren(...rows); pages = 1; }
    cursor = res.next_cursor || '';
    more.hidden = !cursor;
    $('l-empty').hidden = tbody.children.length > 0;
    $('l-error').hidden = true;
  } catch (err) {
    const e = $('l-error');
    e.textContent = err instanceof APIError && err.status === 0 ? 'The server is not answering; retrying.' : String(err.message || err);
    e.hidden = false;
  } finally {
    loading = false;
  }
}

more.addEventListener('click', () => load(true));
status.addEventListener('change', () => load(false));
let typing = 0;
template.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => load(false), 250); });
$('open-form').addEventListener('submit', ev => {
  ev.preventDefault();
  const id = $('open-id').value.trim();
  if (id) location.href = 'builds/' + encodeURIComponent(id);
});
forgetButton($('t-forget'));

// Refreshing only the first page keeps "Load more" pages stable while
// someone reads them.
setInterval(() => { if (auto.checked && pages <= 1 && !document.hidden) load(false); }, 5000);

keyOrAsk().then(() => load(false));
