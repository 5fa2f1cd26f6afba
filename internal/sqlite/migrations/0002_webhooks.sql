-- Webhooks and their transactional outbox. An event is recorded in the
-- transaction that changes the build's status, as one webhook_outbox row
-- per hook that takes it; the deliverer claims due rows (next_at pushed
-- ahead by a lease while an attempt runs), and drops a row once it is
-- delivered or given up. Each attempt leaves a webhook_deliveries record.

CREATE TABLE webhooks (
	id         TEXT PRIMARY KEY,
	team       TEXT NOT NULL,
	url        TEXT NOT NULL,
	events     TEXT NOT NULL, -- JSON array of event types
	secret     TEXT NOT NULL, -- kept as given: every delivery is signed with it
	created_at INTEGER NOT NULL
) STRICT;

-- Events look up their team's hooks; listings are oldest first.
CREATE INDEX webhooks_team ON webhooks (team, created_at, id);

CREATE TABLE webhook_outbox (
	seq        INTEGER PRIMARY KEY,
	event_id   TEXT NOT NULL,
	hook_id    TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
	type       TEXT NOT NULL,
	build_id   TEXT NOT NULL, -- no foreign key: retention may delete the build first
	created_at INTEGER NOT NULL,
	body       BLOB NOT NULL, -- the exact bytes every attempt sends and signs
	attempts   INTEGER NOT NULL DEFAULT 0,
	next_at    INTEGER NOT NULL,
	claim      TEXT -- the claim of the attempt under way, if any
) STRICT;

CREATE UNIQUE INDEX webhook_outbox_hook_event ON webhook_outbox (hook_id, event_id);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at, seq);

CREATE TABLE webhook_deliveries (
	seq         INTEGER PRIMARY KEY,
	hook_id     TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
	event_id    TEXT NOT NULL,
	type        TEXT NOT NULL,
	build_id    TEXT NOT NULL,
	attempt     INTEGER NOT NULL,
	status_code INTEGER NOT NULL DEFAULT 0, -- 0: no answer
	error       TEXT NOT NULL DEFAULT '',
	result      TEXT NOT NULL,
	duration_ms INTEGER NOT NULL,
	at          INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (hook_id, seq);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at, seq);
