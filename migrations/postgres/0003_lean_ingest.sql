-- Queueing a large list updates every index on jobs for every new job. This one repeated the
-- unique (kind, indicator) index for look-ups by indicator alone; those now name the kinds
-- (`kind IN (...) AND indicator = ?`) and use the unique index.
DROP INDEX jobs_by_indicator;
