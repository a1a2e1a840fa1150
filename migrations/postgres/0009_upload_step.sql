-- A job whose lookup found nothing and whose upload (or URL submission) was stopped before it
-- was sent keeps that answer as its step, `upload`: the next run uploads it without paying for
-- the lookup again.
ALTER TABLE jobs DROP CONSTRAINT jobs_step_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_step_check CHECK (step IN ('lookup', 'upload', 'poll'));
