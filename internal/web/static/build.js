// The console of one build: /console/builds/{build_id}. This module wires
// the others together:
//
//   model.js        the entries, omission notices, groups, rows, search (pure)
//   network.js      the JSON pages and the live stream, with reconnects
//   view.js         drawing the rows, header, banner and timeline
//   interaction.js  follow, filter, search, permalinks, downloads
//
// Every entry is accepted only at the offset the page expects next, so a
// resumed stream that repeats entries adds nothing, and one that would
// skip some is dropped and reopened from the last offset held; the one
// jump allowed is an omission notice, drawn as a divider.

import { keyOrAsk, APIError, setStatus, forgetButton, terminalStatuses } from './common.js';
import { Log } from './model.js';
import { Follower } from './network.js';
import { View } from './view.js';
import { Interaction } from './interaction.js';

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

const log = new Log();
const view = new View(el, log, { follow: true, sel: -1, cur: -1 }, buildID);
const interaction = new Interaction(view, buildID);
interaction.wire($);

const follower = new Follower('/v1/templates/builds/' + encodeURIComponent(buildID), log, {
  onBuild: b => { view.build = b; view.dirty(true); },
  onEntries: () => {
    const b = view.build;
    if (b && b.status === 'queued') b.status = 'building';
    interaction.entriesAdded();
    view.dirty(true);
  },
  onConn: (text, cls) => view.setConn(text, cls),
  onError: msg => view.showError(msg),
  onEnd: () => view.dirty(true),
});

setInterval(() => {
  // Elapsed time and the running group's duration tick while live.
  const b = view.build;
  if (b && !log.done && !terminalStatuses.includes(b.status)) view.dirty(true);
}, 1000);

async function main() {
  el.id.textContent = buildID;
  forgetButton($('t-forget'));
  setStatus(el.status, 'loading');
  await keyOrAsk();
  try {
    await follower.start();
  } catch (err) {
    if (!(err instanceof APIError && err.status === 404)) throw err;
    setStatus(el.status, 'not found');
    view.showError('No build ' + buildID + ' (or it belongs to another team).');
  }
}

main().catch(err => view.showError(String(err && err.message || err)));
