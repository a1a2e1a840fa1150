-- The IOC lists a daemon's lists directory queued whole (see migrations/sqlite/0009_lists_read.sql).
CREATE TABLE lists_read (
    path        TEXT   PRIMARY KEY,
    size        BIGINT NOT NULL,
    modified_ns BIGINT NOT NULL,
    inode       BIGINT NOT NULL,
    read_at     BIGINT NOT NULL
);
