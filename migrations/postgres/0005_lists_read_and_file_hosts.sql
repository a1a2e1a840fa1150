-- The IOC lists a daemon's lists directory queued whole (see migrations/sqlite/0009_lists_read.sql),
-- by host: a path names a list on one host.
CREATE TABLE lists_read (
    host        TEXT   NOT NULL,
    path        TEXT   NOT NULL,
    size        BIGINT NOT NULL,
    modified_ns BIGINT NOT NULL,
    inode       BIGINT NOT NULL,
    read_at     BIGINT NOT NULL,
    PRIMARY KEY (host, path)
);

-- With one database for several hosts, a path names a file on the host that saw it, and only a
-- daemon there can read it (to upload it). '' for the rows written before: any host.
ALTER TABLE file_paths ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE file_paths DROP CONSTRAINT file_paths_pkey;
ALTER TABLE file_paths ADD PRIMARY KEY (job_id, host, path);
