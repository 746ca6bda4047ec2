-- reshard metadata schema, version 8: what the coordinator's runtime shows in `status`: the work
-- being retried right now, why the backfill is paused, the rate limit in force and where it came
-- from, and whether the changelog grows or drains.

-- The shard an event is about, when it is about one.
ALTER TABLE reshard.events ADD COLUMN shard text;

ALTER TABLE reshard.migrations
    -- Who set max_rows_per_second: 'apply --max-rows-per-second' or 'reshard throttle'.
    ADD COLUMN max_rows_per_second_source text,
    ADD COLUMN max_rows_per_second_at timestamptz,
    -- Why the backfill is paused, as the coordinator last decided; NULL while it copies.
    ADD COLUMN paused_reason text,
    ADD COLUMN paused_since timestamptz;

-- Changes per second written on the source (produced) and applied to the targets, measured by
-- the coordinator over its last few seconds.
ALTER TABLE reshard.catchup
    ADD COLUMN produced_per_second float8,
    ADD COLUMN applied_per_second float8;

-- Work being retried right now (a shard or the metadata database went away). A row is removed
-- when the work succeeds again; the coordinator replaces them all when it starts.
CREATE TABLE reshard.retries (
    migration  text NOT NULL REFERENCES reshard.migrations (name) ON DELETE CASCADE,
    work       text NOT NULL,
    shard      text,
    failures   integer NOT NULL,
    since      timestamptz NOT NULL,
    last_error text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, work)
);
