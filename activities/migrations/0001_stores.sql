-- The effect ledger and the artifact store shared by every worker (FSMFLOW_STORE_URL).
-- Applied by `fsmflow store migrate`; never edit a migration that was released:
-- add the next one. Migrations only add (tables, columns with defaults, indexes), so
-- workers of the previous release keep working while a rollout migrates under them.

CREATE TABLE fsmflow_effects (
    key text PRIMARY KEY,
    tool text NOT NULL,
    call text NOT NULL DEFAULT '',
    scope text NOT NULL DEFAULT '',
    status text NOT NULL CHECK (status IN ('started', 'done')),
    result text,
    attempts integer NOT NULL DEFAULT 1,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX fsmflow_effects_scope ON fsmflow_effects (scope) WHERE scope <> '';

-- An artifact is a header row and its bytes in chunk rows of at most 1 MiB, so it
-- streams in (COPY) and out (row by row) without one value as large as itself.
CREATE TABLE fsmflow_artifacts (
    scope text NOT NULL,
    path text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    sha256 text NOT NULL,
    chunks integer NOT NULL CHECK (chunks >= 0),
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, path)
);
CREATE TABLE fsmflow_artifact_chunks (
    scope text NOT NULL,
    path text NOT NULL,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (scope, path, seq),
    FOREIGN KEY (scope, path) REFERENCES fsmflow_artifacts (scope, path) ON DELETE CASCADE
);
