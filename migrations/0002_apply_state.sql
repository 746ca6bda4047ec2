-- reshard metadata schema, version 2: what `reshard apply` needs to resume after a crash.

ALTER TABLE reshard.migrations
    ADD COLUMN max_rows_per_second integer CHECK (max_rows_per_second > 0),
    ADD COLUMN last_error text,
    ADD COLUMN last_error_at timestamptz;

-- Who runs a migration. The holder also keeps a session advisory lock on this database, which
-- dies with its connection, so a row whose lock is free belongs to a dead coordinator.
CREATE TABLE reshard.leases (
    migration    text PRIMARY KEY REFERENCES reshard.migrations (name) ON DELETE CASCADE,
    holder_host  text NOT NULL,
    holder_pid   integer NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (table, source, target): the backfill's checkpoint. `last_key` is the unique key
-- of the last row copied, as text; it is written only after the batch is committed on the target.
CREATE TABLE reshard.slices (
    migration      text NOT NULL REFERENCES reshard.migrations (name) ON DELETE CASCADE,
    table_name     text NOT NULL,
    source         text NOT NULL,
    target         text NOT NULL,
    stays_in_place boolean NOT NULL,
    estimated_rows bigint NOT NULL,
    rows_copied    bigint NOT NULL DEFAULT 0,
    last_key       text[],
    done           boolean NOT NULL DEFAULT false,
    started_at     timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, table_name, source, target)
);

-- The catch-up's view of each source's changelog, written by the coordinator for `status`.
CREATE TABLE reshard.catchup (
    migration         text NOT NULL REFERENCES reshard.migrations (name) ON DELETE CASCADE,
    source            text NOT NULL,
    backlog           bigint NOT NULL DEFAULT 0,
    oldest_change_at  timestamptz,
    applied_total     bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, source)
);
