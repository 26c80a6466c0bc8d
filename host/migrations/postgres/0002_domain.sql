-- The state units of work read and write beside the outbox: payments and the addresses they
-- watch, chain cursors, counters, endpoints configured at run time, kept API answers.
-- Records are the same JSON as in the redb file, kept as text so a merchant's metadata comes
-- back byte for byte (jsonb would reorder keys and reformat numbers). Columns beside the
-- record are the ones queries select on.

-- A payment; `open` while it can still change state (pending, underpaid, detected).
CREATE TABLE payments (
    id            uuid PRIMARY KEY,
    chain         text NOT NULL,
    open          boolean NOT NULL,
    detected      boolean NOT NULL,
    expires_at_ms bigint NOT NULL,
    record        text NOT NULL
);
-- What a scan step loads: the open payments of a chain.
CREATE INDEX open_payments ON payments (chain, id) WHERE open;

-- The latest payment created on an address of a chain, and when it ended (NULL while open):
-- who an address belongs to, and which addresses the scanner watches.
CREATE TABLE addresses (
    chain       text NOT NULL,
    address     text NOT NULL,
    payment_id  uuid NOT NULL,
    ended_at_ms bigint,
    PRIMARY KEY (chain, address)
);

-- How far each chain has been scanned (ChainCursor JSON: number, hash, recent hashes).
CREATE TABLE chain_cursors (
    chain  text PRIMARY KEY,
    record text NOT NULL
);

-- Named counters, e.g. the next watch-only derivation index.
CREATE TABLE counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);

-- Every endpoint's configuration and secrets (StoredEndpoint JSON).
CREATE TABLE endpoint_configs (
    id     text PRIMARY KEY,
    record text NOT NULL
);

-- The answer a create gave for an Idempotency-Key (StoredAnswer JSON).
CREATE TABLE api_answers (
    key       text PRIMARY KEY,
    stored_at timestamptz NOT NULL DEFAULT now(),
    record    text NOT NULL
);
