-- Stable views for people who prefer SQL, and the indexes that `vtriage report` filters use.
-- The views are an interface: later migrations may add columns at the end but never rename or
-- drop one. docs/schema.md documents every column.

-- One row per job: what it is, where it came from, its verdict and counts. Times are ISO-8601
-- UTC text; lists are joined with '; ' (the JSON of `vtriage report` keeps them as arrays).
CREATE VIEW v_report AS
SELECT
    j.id                                                                   AS job_id,
    j.kind                                                                 AS kind,
    j.indicator                                                            AS indicator,
    j.state                                                                AS state,
    v.verdict                                                              AS verdict,
    v.malicious                                                            AS malicious,
    v.suspicious                                                           AS suspicious,
    v.harmless                                                             AS harmless,
    v.undetected                                                           AS undetected,
    v.timeout                                                              AS timeout,
    v.type_unsupported                                                     AS type_unsupported,
    v.failure                                                              AS failure,
    v.engines                                                              AS engines,
    v.threat_label                                                         AS threat_label,
    CASE WHEN j.kind = 'file' THEN COALESCE(v.sha256, j.indicator)
         WHEN j.kind = 'hash' AND length(j.indicator) = 64 THEN COALESCE(v.sha256, j.indicator)
         ELSE v.sha256 END                                                 AS sha256,
    CASE WHEN j.kind = 'hash' AND length(j.indicator) = 32 THEN COALESCE(v.md5, j.indicator)
         ELSE v.md5 END                                                    AS md5,
    CASE WHEN j.kind = 'hash' AND length(j.indicator) = 40 THEN COALESCE(v.sha1, j.indicator)
         ELSE v.sha1 END                                                   AS sha1,
    (SELECT group_concat(path, '; ')
       FROM (SELECT path FROM file_paths WHERE job_id = j.id ORDER BY path)) AS paths,
    (SELECT group_concat(source || ':' || line, '; ')
       FROM (SELECT source, line FROM sources WHERE job_id = j.id ORDER BY source, line)) AS sources,
    CASE j.kind
        WHEN 'file'   THEN 'https://www.virustotal.com/gui/file/' || COALESCE(v.sha256, j.indicator)
        WHEN 'hash'   THEN 'https://www.virustotal.com/gui/file/' || COALESCE(v.sha256, j.indicator)
        WHEN 'url'    THEN CASE WHEN v.vt_id IS NOT NULL
                                THEN 'https://www.virustotal.com/gui/url/' || v.vt_id END
        WHEN 'domain' THEN 'https://www.virustotal.com/gui/domain/' || j.indicator
        WHEN 'ip'     THEN 'https://www.virustotal.com/gui/ip-address/' || j.indicator
    END                                                                    AS vt_link,
    strftime('%Y-%m-%dT%H:%M:%fZ', j.created_at / 1000.0, 'unixepoch')     AS first_seen,
    strftime('%Y-%m-%dT%H:%M:%fZ', v.checked_at / 1000.0, 'unixepoch')     AS checked_at,
    strftime('%Y-%m-%dT%H:%M:%SZ', v.vt_analysis_date, 'unixepoch')        AS vt_analysis_date,
    v.note                                                                 AS note,
    v.error                                                                AS error,
    j.last_error                                                           AS last_error
FROM jobs j
LEFT JOIN verdicts v ON v.job_id = j.id;

-- The queue at a glance: jobs per state, kind and verdict.
CREATE VIEW v_queue AS
SELECT j.state AS state, j.kind AS kind, v.verdict AS verdict, COUNT(*) AS jobs
FROM jobs j
LEFT JOIN verdicts v ON v.job_id = j.id
GROUP BY j.state, j.kind, v.verdict;

-- Quota spent per key fingerprint and UTC day or month.
CREATE VIEW v_quota AS
SELECT key_id, period, used FROM quota_periods;

-- `report --since/--until` and `recheck --older-than` filter on the time of the verdict.
CREATE INDEX verdicts_checked_at ON verdicts (checked_at);
-- `report --source` finds the jobs of one IOC list.
CREATE INDEX sources_by_source ON sources (source, job_id);
-- `report --raw INDICATOR` finds a job by its value whatever its kind.
CREATE INDEX jobs_by_indicator ON jobs (indicator);
-- `report --kind` with the default order (first seen).
CREATE INDEX jobs_by_kind ON jobs (kind, id);
