-- The delivery queue on PostgreSQL: events, their deliveries, bodies, attempts and the narrow
-- table of what is due. Applied by `hookgate store migrate` (and at start), once, in one
-- transaction; never edit an applied migration: add the next file instead.
--
-- Shape (after Svix and Convoy): what is written once stays where it was written (`events`,
-- `bodies`, `attempts` are append-only), and the rows that churn are narrow (`queue` holds
-- four columns per pending delivery and loses the row when the delivery settles), so the
-- claim path reads and rewrites as little as possible and vacuum has little to do.

-- One published event. `created_at_ms` is the publisher-facing timestamp (the default body is
-- rendered again from it byte for byte), so it is the gateway's clock, in unix milliseconds.
CREATE TABLE events (
    id              uuid PRIMARY KEY,
    type            text NOT NULL,
    created_at_ms   bigint NOT NULL,
    -- The data object exactly as the publisher sent it (numbers keep every digit).
    data            text NOT NULL,
    idempotency_key text UNIQUE,
    -- SHA-256 of the type and data: tells a retried publish from a conflicting one.
    fingerprint     text NOT NULL
);
CREATE INDEX events_by_time ON events (created_at_ms);

-- One event bound for one endpoint: its life, updated when an attempt settles.
CREATE TABLE deliveries (
    id               uuid PRIMARY KEY,
    event_id         uuid NOT NULL,
    endpoint_id      text NOT NULL,
    -- pending | delivered | dead_lettered | dropped
    status           text NOT NULL,
    created_at_ms    bigint NOT NULL,
    attempt_count    integer NOT NULL DEFAULT 0,
    -- attempt_count when the current retry cycle began (0, or the count at the last replay).
    cycle_start      integer NOT NULL DEFAULT 0,
    last_error       text,
    dead_lettered_at timestamptz,
    -- How to send the body: NULL content type is application/json; headers and plugins are
    -- JSON arrays ([[name, value]…] and ["name@version"…]).
    content_type     text,
    headers          jsonb NOT NULL DEFAULT '[]',
    plugins          jsonb NOT NULL DEFAULT '[]',
    -- No body yet: the endpoint's plugin chain has not run (or failed; a replay runs it again).
    needs_render     boolean NOT NULL DEFAULT false
) WITH (fillfactor = 90);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX dead_letters ON deliveries (endpoint_id, dead_lettered_at)
    WHERE dead_lettered_at IS NOT NULL;

-- The exact body bytes every attempt sends, when plugins shaped them (the default body is
-- rendered again from the event). Written once.
CREATE TABLE bodies (
    delivery_id uuid PRIMARY KEY,
    body        bytea NOT NULL
);

-- Every HTTP attempt and what came of it. Append-only.
CREATE TABLE attempts (
    delivery_id      uuid NOT NULL,
    number           integer NOT NULL,
    at_ms            bigint NOT NULL,
    status_code      integer,
    latency_ms       bigint NOT NULL,
    error            text,
    response_snippet text,
    PRIMARY KEY (delivery_id, number)
);

-- One row per pending delivery, deleted when it settles. `due_at` is the database's clock.
-- While `claim` is set a node holds the delivery and `due_at` is when that lease runs out:
-- past it any node may claim the row again (with a new token), and a completion that does
-- not carry the current token is refused.
CREATE TABLE queue (
    delivery_id uuid PRIMARY KEY,
    endpoint_id text NOT NULL,
    due_at      timestamptz NOT NULL,
    claim       uuid
) WITH (
    fillfactor = 70,
    -- Rows come and go all day: vacuum after a fixed number of dead rows, not a fraction of
    -- a table whose size swings from empty to millions, and without cost-based pauses.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX queue_due ON queue (endpoint_id, due_at);

-- What the gateway learned about an endpoint at run time (disabled by a 410).
CREATE TABLE endpoint_states (
    endpoint_id     text PRIMARY KEY,
    disabled_reason text,
    disabled_at     timestamptz
);
