-- reshard metadata schema, version 5: what a verification run verifies, so a run interrupted
-- under one config is not continued under another (its finished chunks would stand for a
-- different comparison). NULL for runs recorded before this version: they are never continued.
ALTER TABLE reshard.verify_runs ADD COLUMN fingerprint text;
