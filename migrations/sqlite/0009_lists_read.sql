-- The IOC lists a daemon's lists directory queued whole, as its watcher saw each (size,
-- modification time in nanoseconds since the Unix epoch, inode) when it was read. A daemon that
-- restarts does not read a list again while these are unchanged, unless reading it would change
-- one of its jobs (a failed one, an unknown URL that may now be submitted).
CREATE TABLE lists_read (
    path        TEXT    PRIMARY KEY,
    size        INTEGER NOT NULL,
    modified_ns INTEGER NOT NULL,
    inode       INTEGER NOT NULL,
    read_at     INTEGER NOT NULL
);
