-- New jobs are counted by the transaction that queues them, one statement per kind, rather than
-- by a trigger that ran a statement for every row: a tenth of a million-line list's time. Every
-- job is queued by `src/store/enqueue.rs`; the counts of changed and deleted jobs are still kept
-- by the triggers of migration 0003.
DROP TRIGGER job_counts_insert;
