-- What a file looked like where it was seen (see migrations/sqlite/0008_file_fingerprints.sql).
ALTER TABLE file_paths ADD COLUMN modified_ns BIGINT;
ALTER TABLE file_paths ADD COLUMN inode BIGINT;
