-- Endpoint and plugin changes made on one node reach every other node.
--
-- Every row written to `endpoint_configs`, `endpoint_states` or `plugins` bumps
-- `config_version` in the writing transaction and notifies channel `hookgate_config` when it
-- commits. The triggers are deferred to the commit, so the one version row is locked last:
-- a writer batch that disables an endpoint and then settles queue rows never holds it while
-- waiting for another node's row locks (no deadlock), and holds it for the least time. A node reloads the endpoints and plugins on the notification, and also whenever
-- the version it polls differs from the one it applied last (a notification is lost while
-- the node's listening connection is down).

-- Plugins uploaded to the gateway, so every node loads the same version of each.
CREATE TABLE plugins (
    name       text PRIMARY KEY,
    -- The first 12 hex digits of the SHA-256 of `wasm`, as the plugin registry reports it.
    version    text NOT NULL,
    wasm       bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row: how many changes the shared configuration has seen.
CREATE TABLE config_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO config_version (one, version) VALUES (true, 0);

CREATE FUNCTION config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_version SET version = version + 1;
    -- Notifications with the same payload in one transaction arrive once.
    PERFORM pg_notify('hookgate_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER endpoint_configs_changed AFTER INSERT OR UPDATE OR DELETE ON endpoint_configs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION config_changed();
CREATE CONSTRAINT TRIGGER endpoint_states_changed AFTER INSERT OR UPDATE OR DELETE ON endpoint_states
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION config_changed();
CREATE CONSTRAINT TRIGGER plugins_changed AFTER INSERT OR UPDATE OR DELETE ON plugins
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION config_changed();
