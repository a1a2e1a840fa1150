-- The same stable views as migrations/sqlite/0002_report_views.sql (read that file for what
-- each column means), so that `psql` users see the columns `sqlite3` users see, with the same
-- names, order and text formats; and the same indexes for the report filters.

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
    (SELECT string_agg(p.path, '; ' ORDER BY p.path)
       FROM file_paths p WHERE p.job_id = j.id)                            AS paths,
    (SELECT string_agg(s.source || ':' || s.line, '; ' ORDER BY s.source, s.line)
       FROM sources s WHERE s.job_id = j.id)                               AS sources,
    CASE j.kind
        WHEN 'file'   THEN 'https://www.virustotal.com/gui/file/' || COALESCE(v.sha256, j.indicator)
        WHEN 'hash'   THEN 'https://www.virustotal.com/gui/file/' || COALESCE(v.sha256, j.indicator)
        WHEN 'url'    THEN CASE WHEN v.vt_id IS NOT NULL
                                THEN 'https://www.virustotal.com/gui/url/' || v.vt_id END
        WHEN 'domain' THEN 'https://www.virustotal.com/gui/domain/' || j.indicator
        WHEN 'ip'     THEN 'https://www.virustotal.com/gui/ip-address/' || j.indicator
    END                                                                    AS vt_link,
    to_char(to_timestamp(j.created_at / 1000.0) AT TIME ZONE 'UTC',
            'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')                               AS first_seen,
    to_char(to_timestamp(v.checked_at / 1000.0) AT TIME ZONE 'UTC',
            'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')                               AS checked_at,
    to_char(to_timestamp(v.vt_analysis_date) AT TIME ZONE 'UTC',
            'YYYY-MM-DD"T"HH24:MI:SS"Z"')                                  AS vt_analysis_date,
    v.note                                                                 AS note,
    v.error                                                                AS error,
    j.last_error                                                           AS last_error
FROM jobs j
LEFT JOIN verdicts v ON v.job_id = j.id;

CREATE VIEW v_queue AS
SELECT j.state AS state, j.kind AS kind, v.verdict AS verdict, COUNT(*) AS jobs
FROM jobs j
LEFT JOIN verdicts v ON v.job_id = j.id
GROUP BY j.state, j.kind, v.verdict;

CREATE VIEW v_quota AS
SELECT key_id, period, used FROM quota_periods;

CREATE INDEX verdicts_checked_at ON verdicts (checked_at);
CREATE INDEX sources_by_source ON sources (source, job_id);
CREATE INDEX jobs_by_indicator ON jobs (indicator);
CREATE INDEX jobs_by_kind ON jobs (kind, id);
