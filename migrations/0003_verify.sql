-- reshard metadata schema, version 3: what `reshard verify` needs to resume after a crash and
-- what `reshard status` shows of the last verification.

-- One verification run per migration at a time; a run whose finished_at is NULL is resumed.
CREATE TABLE reshard.verify_runs (
    migration   text PRIMARY KEY REFERENCES reshard.migrations (name) ON DELETE CASCADE,
    run         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- Each table's last result. `outcome` is running until every chunk is done.
CREATE TABLE reshard.verify_tables (
    migration    text NOT NULL REFERENCES reshard.migrations (name) ON DELETE CASCADE,
    table_name   text NOT NULL,
    run          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    outcome      text NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'identical', 'different')),
    chunks_total integer NOT NULL,
    source_rows  bigint NOT NULL DEFAULT 0,
    target_rows  bigint NOT NULL DEFAULT 0,
    differences  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (migration, table_name)
);

-- The key ranges a table is compared in, fixed when its verification starts so a resumed run
-- compares the same ranges. Keys are the unique key's values as text; NULL is open-ended.
CREATE TABLE reshard.verify_chunks (
    migration   text NOT NULL,
    table_name  text NOT NULL,
    chunk       integer NOT NULL,
    lower_key   text[],
    upper_key   text[],
    done        boolean NOT NULL DEFAULT false,
    source_rows bigint,
    target_rows bigint,
    rechecks    integer NOT NULL DEFAULT 0,
    verified_at timestamptz,
    PRIMARY KEY (migration, table_name, chunk),
    FOREIGN KEY (migration, table_name) REFERENCES reshard.verify_tables ON DELETE CASCADE
);

-- The rows that differ: missing on the target, extra on it, different, or held by two sources.
CREATE TABLE reshard.verify_differences (
    migration  text NOT NULL,
    table_name text NOT NULL,
    chunk      integer NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('missing', 'extra', 'different', 'duplicate')),
    key        text[] NOT NULL,
    source     text,
    target     text NOT NULL,
    FOREIGN KEY (migration, table_name) REFERENCES reshard.verify_tables ON DELETE CASCADE
);
CREATE INDEX ON reshard.verify_differences (migration, table_name);
