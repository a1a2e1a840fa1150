-- What a file looked like where it was seen: its modification time (nanoseconds since the Unix
-- epoch) and inode. A daemon that restarts takes a file of its drop directory whose size, time
-- and inode are unchanged as already queued, instead of reading and hashing it again. NULL for
-- rows written before, and for files not seen by the watcher (`scan`).
ALTER TABLE file_paths ADD COLUMN modified_ns INTEGER;
ALTER TABLE file_paths ADD COLUMN inode INTEGER;
