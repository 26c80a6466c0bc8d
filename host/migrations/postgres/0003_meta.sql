-- Named secrets every node of the gateway shares, e.g. the key that authenticates compiled
-- plugins in each node's on-disk cache (`plugin_cache_key`, 32 random bytes). A value is
-- created by the first node that needs it (an insert that loses the race changes nothing)
-- and never changes after.
CREATE TABLE meta (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);
