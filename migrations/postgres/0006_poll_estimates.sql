-- When to poll an analysis, as the workers learned it (see migrations/sqlite/0010_poll_estimates.sql).
CREATE TABLE poll_estimates (
    id         INTEGER          PRIMARY KEY CHECK (id = 1),
    first_ms   DOUBLE PRECISION NOT NULL,
    second_ms  DOUBLE PRECISION NOT NULL,
    updated_at BIGINT           NOT NULL
);
