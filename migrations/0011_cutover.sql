-- reshard metadata schema, version 11: cutover and rollback. Every switch between the layouts is an
-- attempt, and each of its steps is recorded here BEFORE it is taken, so a coordinator killed in the
-- middle leaves enough for `cutover` or `rollback` to finish or undo it. The epoch applications route
-- by is the last published switch's to_epoch (1, the old layout, before any).

CREATE TABLE reshard.switches (
    migration    text NOT NULL REFERENCES reshard.migrations (name) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    -- cutover: the targets take the writes; rollback: the sources take them again.
    direction    text NOT NULL CHECK (direction IN ('cutover', 'rollback')),
    from_epoch   bigint NOT NULL,
    to_epoch     bigint NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    -- Set when to_epoch is published: from then on the switch is completed, never undone.
    published_at timestamptz,
    finished_at  timestamptz,
    -- NULL while running (or when its coordinator died); done, or undone (the from layout serves).
    outcome      text CHECK (outcome IN ('done', 'undone')),
    -- From the barrier to the release: how long writes were held up, as measured by the coordinator.
    stall_ms     float8,
    error        text,
    PRIMARY KEY (migration, attempt)
);

CREATE TABLE reshard.switch_steps (
    migration   text NOT NULL,
    attempt     integer NOT NULL,
    step        text NOT NULL,
    -- The shard a step is about ('' for the whole migration).
    shard       text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    detail      text,
    error       text,
    PRIMARY KEY (migration, attempt, step, shard),
    FOREIGN KEY (migration, attempt) REFERENCES reshard.switches (migration, attempt) ON DELETE CASCADE
);
