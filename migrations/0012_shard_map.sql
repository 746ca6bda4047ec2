-- reshard metadata schema, version 12: the shard map, the contract with applications.
-- Every layout a migration routes by is one numbered epoch: the old layout is epoch 1 (published
-- when `apply` first starts), cutover publishes the new one (epoch + 1), rollback the old one again.
-- Exactly one epoch per migration is current; applications read it from the view below.

CREATE TABLE reshard.shard_map_epochs (
    migration   text NOT NULL REFERENCES reshard.migrations (name) ON DELETE CASCADE,
    epoch       bigint NOT NULL CHECK (epoch >= 1),
    -- The whole ShardMap (ReshardRouting): {migration, epoch, function: {kind, shardCount,
    -- boundaries}, shards: [{name, dsn, replicas}], tables: [{name, key, keyType}]}. Connection
    -- strings never hold a password.
    map         jsonb NOT NULL,
    is_current  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, epoch)
);
CREATE UNIQUE INDEX shard_map_epochs_current ON reshard.shard_map_epochs (migration) WHERE is_current;

-- One row per migration: its current epoch, for any language. Route a key of `tables[i]` with
-- `function` (hash: the key type's PostgreSQL hash, e.g. hashint8(key), counted against
-- `boundaries` as width_bucket does; modulo: ((key % shard_count) + shard_count) % shard_count;
-- range: how many `boundaries` are <= key). The result indexes `shards` (0-based).
CREATE VIEW reshard.shard_map AS
SELECT e.migration,
       e.epoch,
       e.map -> 'function' ->> 'kind' AS function,
       (e.map -> 'function' ->> 'shardCount')::integer AS shard_count,
       ARRAY(SELECT b.value::bigint
               FROM jsonb_array_elements_text(e.map -> 'function' -> 'boundaries') WITH ORDINALITY AS b (value, i)
              ORDER BY b.i) AS boundaries,
       e.map -> 'shards' AS shards,
       e.map -> 'tables' AS tables,
       e.map,
       e.created_at AS published_at
  FROM reshard.shard_map_epochs e
 WHERE e.is_current;
COMMENT ON VIEW reshard.shard_map IS
    'reshard: the current shard map epoch of every migration (shards in shard order as {name, dsn, replicas}, '
    'function, boundaries, tables as {name, key, keyType}); see the README, "For applications"';
