// Unit tests of the console's model (static/model.js), run by Node's own
// test runner: node --test internal/web/test/ (no packages needed).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Log, Gap, NOTICE, omission, omissionText, humanBytes, parseTime, buildTotal, groupLabel, rawText, messageLines,
} from '../static/model.js';

const msg = (offset, message, extra = {}) => ({ offset, timestamp: '2026-01-02T03:04:05.000Z', kind: 'message', level: 'info', message, ...extra });

// notice is what the server sends in place of offsets from..to.
function notice(from, to, bytes = 1000 * (to - from + 1)) {
  return {
    offset: to, timestamp: '2026-01-02T03:04:06Z', kind: 'warning', level: 'warn',
    message: `… ${to - from + 1} lines omitted: the log is over its limit …`,
    result_metadata: { omitted_from: from, omitted_to: to, omitted_entries: to - from + 1, omitted_bytes: bytes },
  };
}

const range = (from, to, extra) => Array.from({ length: to - from + 1 }, (_, k) => msg(from + k, 'line ' + (from + k), extra));

test('humanBytes matches the server: binary units, one decimal, no .0', () => {
  assert.equal(humanBytes(0), '0 B');
  assert.equal(humanBytes(1023), '1023 B');
  assert.equal(humanBytes(1024), '1 KiB');
  assert.equal(humanBytes(18856), '18.4 KiB');
  assert.equal(humanBytes(20035), '19.6 KiB');
  assert.equal(humanBytes(1 << 20), '1 MiB');
  assert.equal(humanBytes(100768563), '96.1 MiB');
  assert.equal(humanBytes(3 * 2 ** 40), '3 TiB');
  assert.equal(humanBytes(5 * 2 ** 50), '5120 TiB');
});

test('omissionText uses the notice counts', () => {
  assert.equal(omissionText({ entries: 18204, bytes: 100768563 }), '18,204 lines (96.1 MiB) omitted');
  assert.equal(omissionText({ entries: 1, bytes: 60 }), '1 line (60 B) omitted');
});

test('omission recognises a notice and nothing else', () => {
  assert.deepEqual(omission(notice(10, 89, 14780)), { from: 10, to: 89, entries: 80, bytes: 14780 });
  assert.equal(omission(msg(3, 'x')), null);
  assert.equal(omission({ ...notice(10, 89), kind: 'message' }), null, 'not a warning');
  assert.equal(omission({ ...notice(10, 89), offset: 88 }), null, 'not at the range end');
  const partial = notice(10, 89);
  delete partial.result_metadata.omitted_bytes;
  assert.equal(omission(partial), null, 'a count missing');
  assert.equal(omission({ ...notice(10, 89), result_metadata: { omitted_from: 90, omitted_to: 89, omitted_entries: 0, omitted_bytes: 0 } }), null, 'from after to');
  assert.equal(omission({ ...notice(10, 89), result_metadata: 'x' }), null);
  assert.equal(omission(null), null);
});

test('add keeps dense entries, skips repeats, throws on a gap', () => {
  const log = new Log();
  assert.equal(log.add(range(0, 4)), 5);
  assert.equal(log.add(range(2, 6)), 2, 'an overlapping resume adds only what is new');
  assert.equal(log.next, 7);
  assert.throws(() => log.add([msg(9, 'skips 7 and 8')]), Gap);
  assert.equal(log.next, 7, 'nothing taken past the gap');
  assert.equal(log.add([{ message: 'no offset' }]), 0);
});

test('a notice is the one jump accepted, at the offset expected', () => {
  const log = new Log();
  log.add(range(0, 9));
  assert.throws(() => log.add([notice(11, 89)]), Gap, 'a notice for a range that starts later leaves offset 10 unaccounted for');
  assert.equal(log.add([notice(10, 89), ...range(90, 94)]), 6);
  assert.equal(log.next, 95);
  assert.deepEqual(log.notices, [10]);
  assert.equal(log.G[10], NOTICE);
  // The range grew since: a later resume meets a notice for the new part.
  assert.equal(log.add([notice(95, 120), ...range(121, 122)]), 3);
  assert.deepEqual(log.notices, [10, 16]);
  assert.equal(log.omitted(), 80 + 26);
  // A notice of exactly the offset expected is accepted as any entry.
  assert.equal(log.add([notice(123, 123), msg(124, 'after')]), 2);
  assert.equal(log.isNotice(log.indexAt(123)), true);
});

test('indexAt finds entries on both sides of a dropped range and the notice inside it', () => {
  const log = new Log();
  log.add([...range(0, 9), notice(10, 89), ...range(90, 99)]);
  assert.equal(log.indexAt(0), 0);
  assert.equal(log.indexAt(9), 9);
  for (const off of [10, 50, 89]) assert.equal(log.indexAt(off), 10, 'offset ' + off + ' is the divider');
  assert.equal(log.indexAt(90), 11);
  assert.equal(log.indexAt(99), 20);
  assert.equal(log.E[log.indexAt(95)].offset, 95);
  assert.equal(log.indexAt(100), -1, 'not held yet');
  assert.equal(new Log().indexAt(0), -1);
});

test('a group goes on across a divider, which belongs to none', () => {
  const log = new Log();
  const step = n => ({ phase: 'step', step_index: n, total_steps: 2 });
  log.add([...range(0, 2, step(1)), ...range(3, 5, step(2)), notice(6, 49), ...range(50, 52, step(2)), msg(53, 'no step: output of step 2')]);
  assert.equal(log.groups.length, 2);
  assert.deepEqual(log.G, [0, 0, 0, 1, 1, 1, NOTICE, 1, 1, 1, 1]);
  assert.equal(log.groups[1].n, 7);
  assert.equal(log.groups[1].last, 10);
  // Rows: two headers, the entries and the divider.
  assert.equal(log.rowE.length, 2 + 11);
  // Collapsing step 2 hides its lines but not the divider.
  log.setCollapsed(1, true);
  assert.deepEqual(log.rowE, [-1, 0, 1, 2, -2, 6]);
  log.setAllCollapsed(true);
  assert.deepEqual(log.rowE, [-1, -2, 6]);
  // rowOf expands the group of the entry it is asked for.
  const r = log.rowOf(log.indexAt(51));
  assert.equal(log.groups[1].collapsed, false);
  assert.equal(log.rowE[r], 8);
  assert.equal(log.E[log.rowE[r]].offset, 51);
  // New groups start collapsed after "collapse all".
  log.add([msg(54, 'x', { phase: 'finishing' })]);
  assert.equal(log.groups[2].collapsed, true);
});

test('the level filter hides neither the notices nor the terminal entry', () => {
  const log = new Log();
  log.add([msg(0, 'info'), msg(1, 'an error', { level: 'error' }), notice(2, 9), msg(10, 'debug', { level: 'debug' }),
    { offset: 11, timestamp: '2026-01-02T03:04:07Z', kind: 'end', level: 'info', message: 'Build ready' }]);
  log.setMinLevel(3);
  assert.deepEqual(log.rowE, [1, 2, 4]);
  // rowOf clears the filter for an entry it hides.
  const r = log.rowOf(0);
  assert.equal(log.minLevel, 0);
  assert.equal(r, 0);
  assert.equal(log.rowE.length, 5);
});

test('search matches without ANSI, case-insensitive, among shown entries, on both sides of a gap', () => {
  const log = new Log();
  log.add([msg(0, '\x1b[31mnpm ERROR\x1b[0m one'), msg(1, 'fine'), notice(2, 90), msg(91, 'npm error two', { level: 'debug' })]);
  log.search('npm error');
  assert.deepEqual(log.matches, [0, 3]);
  log.setMinLevel(1);
  assert.deepEqual(log.matches, [0], 'the filter hides the debug match');
  log.setMinLevel(0);
  log.search('omitted');
  assert.deepEqual(log.matches, [2], "the notice's message is searchable");
  log.add([msg(92, 'the word omitted again')]);
  assert.deepEqual(log.matches, [2, 4], 'entries that arrive are searched too');
});

test('the terminal entry ends the log and is in no group', () => {
  const log = new Log();
  log.add([msg(0, 'a', { phase: 'build' }), { offset: 1, timestamp: '2026-01-02T03:04:09Z', kind: 'end', level: 'error', message: 'failed' }, msg(2, 'late')]);
  assert.equal(log.done, true);
  assert.equal(log.terminal, 1);
  assert.equal(log.G[1], -1);
  assert.equal(log.next, 2);
  assert.equal(log.E.length, 2, 'nothing after the terminal entry');
  assert.equal(log.terminalStatus('building'), 'failed');
  assert.equal(log.terminalStatus('timeout'), 'timeout');
});

test('group outcomes: an error in the latest attempt fails it; a retry starts over', () => {
  const log = new Log();
  const s = (n, extra) => ({ phase: 'step', step_index: n, ...extra });
  log.add([
    msg(0, 'RUN npm ci', s(1, { attempt: 1 })),
    msg(1, 'ECONNRESET', s(1, { attempt: 1, level: 'error', kind: 'error' })),
  ]);
  assert.equal(log.outcome(0, 'building'), 'failed', 'an error shows at once, while the step runs');
  log.add([msg(2, 'retrying', s(1, { attempt: 2, kind: 'retry', level: 'warn' }))]);
  assert.equal(log.outcome(0, 'building'), 'running', 'a new attempt starts clean');
  log.add([msg(3, 'ok', s(1, { attempt: 2 })), msg(4, 'RUN npm test', s(2))]);
  assert.equal(log.outcome(0, 'building'), 'ok', 'the retry succeeded');
  assert.equal(log.outcome(1, 'building'), 'running');
  assert.equal(log.groups[0].attempt, 2);
  assert.equal(log.groups[0].errors, 1);
  log.add([msg(5, 'boom', s(2, { level: 'error' }))]);
  assert.equal(log.outcome(1, 'building'), 'failed');
  log.add([{ offset: 6, timestamp: '2026-01-02T03:04:10Z', kind: 'cancelled', level: 'warn', message: 'cancelled' }]);
  assert.equal(log.outcome(1, 'cancelled'), 'cancelled', "the last group carries the build's end");
  assert.equal(log.groupEnd(0, 'cancelled', 0), log.T[4], 'a group ends where the next begins');
  assert.equal(log.groupEnd(1, 'cancelled', 0), log.T[6], 'the last at the terminal entry');
  assert.equal(groupLabel(log.groups[1], 3), '[step] step 2/3');
});

test('parseTime reads RFC 3339 at millisecond precision', () => {
  assert.equal(parseTime('2026-01-02T03:04:05Z'), Date.UTC(2026, 0, 2, 3, 4, 5));
  assert.equal(parseTime('2026-01-02T03:04:05.123456789Z'), Date.UTC(2026, 0, 2, 3, 4, 5, 123));
  assert.equal(parseTime('2026-01-02T03:04:05.5Z'), Date.UTC(2026, 0, 2, 3, 4, 5, 500));
  assert.equal(parseTime('2026-01-02T05:04:05.25+02:00'), Date.UTC(2026, 0, 2, 3, 4, 5, 250));
  assert.ok(Number.isNaN(parseTime(undefined)));
  assert.ok(Number.isNaN(parseTime('yesterday')));
});

test("buildTotal is finished_at - created_at, the CLI's figure", () => {
  const b = { created_at: '2026-01-02T03:04:05.000Z', started_at: '2026-01-02T03:04:05.190Z', finished_at: '2026-01-02T03:04:09.010Z', status: 'ready' };
  assert.equal(buildTotal(b, 0), 4010);
  const running = { created_at: b.created_at, status: 'building' };
  assert.equal(buildTotal(running, Date.parse(b.created_at) + 1500), 1500);
  const ended = { created_at: b.created_at, updated_at: '2026-01-02T03:04:06Z', status: 'failed' };
  assert.equal(buildTotal(ended, 1e15), 1000);
});

test('rawText and messageLines', () => {
  assert.equal(rawText(msg(0, '\x1b[1mbold\x1b[0m', { phase: 'step', step_index: 2, total_steps: 4, level: 'warn' })),
    '2026-01-02T03:04:05.000Z WARN  [step] step 2/4 \x1b[1mbold\x1b[0m\n');
  assert.equal(rawText(notice(3, 9)), '2026-01-02T03:04:06Z WARN  … 7 lines omitted: the log is over its limit …\n');
  assert.deepEqual(messageLines({ message: 'a\nb\n\n' }), ['a', 'b']);
  assert.deepEqual(messageLines({ message: 'one' }), ['one']);
  assert.deepEqual(messageLines({}), ['']);
});
