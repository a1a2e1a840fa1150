-- When to poll an analysis, as the workers learned it from what their polls saw (milliseconds
-- after the submission: the first poll, the second): a process starts from what the one before
-- it learned, instead of from `[poll] first_delay_secs`. One row.
CREATE TABLE poll_estimates (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    first_ms   REAL    NOT NULL,
    second_ms  REAL    NOT NULL,
    updated_at INTEGER NOT NULL
);
