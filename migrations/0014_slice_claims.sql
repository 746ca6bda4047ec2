-- reshard metadata schema, version 14: backfill slices claimed by several processes
-- (`apply --workers-only` beside the lease holder). A slice is claimed by one process at a time:
-- `claimed_by` names it (host, pid, run), `claimed_session` is the backend of the metadata session
-- it claimed with, and `heartbeat_at` is refreshed about once a second while it holds the claim.
-- A claim whose session is gone (the process died) or whose heartbeat is older than the expiry
-- (the process hangs or lost the network) is taken over by the next process that asks.
ALTER TABLE reshard.slices
    ADD COLUMN claimed_by text,
    ADD COLUMN claimed_session integer,
    ADD COLUMN heartbeat_at timestamptz;
