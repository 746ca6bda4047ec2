-- reshard metadata schema, version 1.
-- Every reshard run keeps its state here, so a coordinator that dies can be replaced by another.
-- Applied by `reshard init` (and by every command that needs it) inside one transaction,
-- together with its row in reshard.schema_version.

CREATE SCHEMA IF NOT EXISTS reshard;

-- One row per data migration (the `migration:` name in reshard.yml).
CREATE TABLE reshard.migrations (
    name        text PRIMARY KEY,
    phase       text NOT NULL DEFAULT 'planned',
    plan        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What happened when: phase changes, retries, errors. Read by `reshard status`.
CREATE TABLE reshard.events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration   text NOT NULL REFERENCES reshard.migrations (name) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    level       text NOT NULL CHECK (level IN ('info', 'warning', 'error')),
    message     text NOT NULL,
    detail      jsonb
);
CREATE INDEX events_migration_at ON reshard.events (migration, at);
