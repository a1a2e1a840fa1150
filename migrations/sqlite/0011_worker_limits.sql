-- The quota limits each worker process runs with, as JSON (`{"unlimited":false,"requests":4,
-- "window_secs":60.0,"daily":500}`), so that `status` judges the usage and the time left by the
-- daemons' limits rather than by its own configuration. NULL before this migration.
ALTER TABLE workers ADD COLUMN limits TEXT;
