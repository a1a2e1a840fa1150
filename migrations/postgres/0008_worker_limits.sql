-- The quota limits each worker process runs with (see migrations/sqlite/0011_worker_limits.sql).
ALTER TABLE workers ADD COLUMN limits TEXT;
