-- ipmanager incremental layout: what an agent that feeds dnsmasq through watched directories
-- ([dnsmasq] layout = "incremental") reports, so that "is my change live?" stays true to what
-- dnsmasq serves, and a way for admins to ask every agent for a compaction.
--
-- How this file is applied: like the earlier files (refinery in one transaction, or by hand with
-- psql -v ON_ERROR_STOP=1 -f ... after V1-V4), so no psql meta-commands, no BEGIN/COMMIT, every
-- object schema-qualified, PostgreSQL 13 or later.
--
-- Why an agent reports more than its snapshot now
--   dnsmasq takes most changes from a watched directory without a signal, but not all of them: a
--   removed reservation, an address moved to another MAC or reused stay as they were in its
--   memory until the agent compacts (rewrites every file, then one SIGHUP). The files on disk
--   are then right while dnsmasq still serves something else for a few hosts. The agent knows
--   which (its model of dnsmasq's memory) and reports their ids as pending_hosts; a change that
--   touched one of them is not applied on that agent yet, whatever its snapshot says.
--
-- The model
--   * agent_status.layout: the agent's [dnsmasq] layout; pending_hosts: the host ids whose
--     served state differs from the files (NULL: none, or not known: agents older than this
--     file); compacted_at: its last compaction done after a request.
--   * agent_report gains three trailing parameters with defaults, so that agents older than this
--     file (13 arguments, V4) and the eleven-argument form (V2) still work unchanged.
--   * change_applied: applied also requires that no host the change touched is pending.
--   * request_compaction(): NOTIFY ipmanager_compact; every agent compacts and reports it.
--   * sync_status: layout, the number of hosts awaiting a compaction and the last compaction.
--
-- SQLSTATEs raised here
--   23514 check_violation        agent_report: invalid site, dns_scope or layout

--------------------------------------------------------------------------------------------------
-- What agents report
--------------------------------------------------------------------------------------------------

ALTER TABLE ipmanager.agent_status
    ADD COLUMN layout text
        CONSTRAINT agent_status_layout_valid CHECK (layout IN ('hostsfile', 'conf', 'incremental')),
    ADD COLUMN pending_hosts bigint[],
    ADD COLUMN compacted_at timestamptz;

COMMENT ON COLUMN ipmanager.agent_status.layout IS
    'The agent''s [dnsmasq] layout: ''hostsfile'', ''conf'' or ''incremental''; NULL for agents older than layouts (they write whole files, as ''hostsfile'').';
COMMENT ON COLUMN ipmanager.agent_status.pending_hosts IS
    'Ids of the hosts whose reservation dnsmasq does not serve as the applied files say until the next compaction (incremental layout), sorted; NULL or empty: none. Reported with each applied snapshot.';
COMMENT ON COLUMN ipmanager.agent_status.compacted_at IS
    'When the agent last reported a compaction done after a request (ipmanager.request_compaction); NULL: never.';

-- V4's thirteen-argument form had no defaults; a second function with three more, defaulted
-- parameters would make every thirteen-argument call ambiguous. So it is replaced by this one,
-- which thirteen-argument calls reach through the defaults. V2's eleven-argument form stays and
-- does the upsert; calls with 3 to 11 arguments still reach it alone.
DROP FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz, text[], text);

-- pending_hosts describes the applied files, so like files_hash it is only taken together with
-- applied: a heartbeat (applied NULL) leaves it alone, and an agent that applies without it
-- (an older agent, or a layout that is always served exactly) has none.
CREATE FUNCTION ipmanager.agent_report(
        name text,
        phase text,
        heartbeat interval,
        applied pg_snapshot,
        files_hash text,
        hosts integer,
        rows_skipped integer,
        error text,
        host text,
        version text,
        started_at timestamptz,
        sites text[],
        dns_scope text,
        layout text DEFAULT NULL,
        pending_hosts bigint[] DEFAULT NULL,
        compacted boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad     text;
    -- Sorted and without repeats; NULL stays NULL (every subnet).
    served  text[] := CASE WHEN agent_report.sites IS NOT NULL THEN
                          ARRAY(SELECT DISTINCT s FROM unnest(agent_report.sites) s ORDER BY s)
                      END;
    -- Sorted, without repeats and NULLs, so that an unchanged set is an unchanged row.
    pending bigint[] := CASE WHEN agent_report.pending_hosts IS NOT NULL THEN
                            ARRAY(SELECT DISTINCT h FROM unnest(agent_report.pending_hosts) h
                                  WHERE h IS NOT NULL ORDER BY h)
                        END;
BEGIN
    SELECT s INTO bad FROM unnest(agent_report.sites) s
    WHERE s IS NULL OR s !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'agent_status.sites: % is not a valid site name: 1 to 63 letters, digits, ''-'', ''_'' or ''.'', starting with a letter or digit',
                coalesce(quote_literal(bad), 'NULL')
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'agent_status',
                  COLUMN = 'sites';
    END IF;
    -- Said before the upsert, in words, instead of the constraint's bare refusal after it.
    IF agent_report.layout NOT IN ('hostsfile', 'conf', 'incremental') THEN
        RAISE EXCEPTION 'agent_status.layout % is not a layout: ''hostsfile'', ''conf'' or ''incremental''',
                quote_literal(agent_report.layout)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'agent_status',
                  COLUMN = 'layout', CONSTRAINT = 'agent_status_layout_valid';
    END IF;
    PERFORM ipmanager.agent_report(agent_report.name, agent_report.phase, agent_report.heartbeat,
                                   agent_report.applied, agent_report.files_hash,
                                   agent_report.hosts, agent_report.rows_skipped,
                                   agent_report.error, agent_report.host, agent_report.version,
                                   agent_report.started_at);
    -- In the same transaction as the upsert: nobody sees a new snapshot with old pending hosts.
    -- Only a row that really changes is rewritten, so heartbeats cost one row version, not two.
    UPDATE ipmanager.agent_status a
    SET sites = served,
        dns_scope = agent_report.dns_scope,
        layout = agent_report.layout,
        pending_hosts = CASE WHEN agent_report.applied IS NOT NULL THEN pending
                             ELSE a.pending_hosts END,
        compacted_at = CASE WHEN agent_report.compacted THEN now() ELSE a.compacted_at END
    WHERE a.name = agent_report.name
      AND ((a.sites, a.dns_scope, a.layout)
               IS DISTINCT FROM (served, agent_report.dns_scope, agent_report.layout)
           OR (agent_report.applied IS NOT NULL AND a.pending_hosts IS DISTINCT FROM pending)
           OR agent_report.compacted);
END
$$;

COMMENT ON FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz, text[], text, text, bigint[], boolean) IS
    'agent_report with the sites the agent serves (NULL: every subnet), its dns_scope, its layout, the hosts dnsmasq does not serve as the applied files say yet (pending_hosts, taken with applied only) and whether it compacted after a request (compacted: sets compacted_at); otherwise as the eleven-argument form.';

--------------------------------------------------------------------------------------------------
-- "Is my change live?" counts pending hosts
--------------------------------------------------------------------------------------------------

-- As V4's, with one more condition for applied: no host that the change inserted, updated or
-- deleted (the ids of its audit_log rows for hosts, before and after) is pending on the agent.
-- Only host rows count: a change to subnets or sites changes the agent's include file, after
-- which it restarts dnsmasq, which leaves nothing pending.
CREATE OR REPLACE FUNCTION ipmanager.change_applied(change xid8)
    RETURNS TABLE (name text, alive boolean, applied boolean, phase text, last_error text,
                   sites text[], concerned boolean)
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.name,
           a.seen_at >= now() - 3 * a.heartbeat,
           coalesce(pg_visible_in_snapshot(change_applied.change, a.applied_snapshot), false)
               AND NOT coalesce(a.pending_hosts && ARRAY(
                       SELECT (r ->> 'id')::bigint
                       FROM ipmanager.audit_log l,
                            LATERAL (VALUES (l.old), (l.new)) v(r)
                       WHERE l.xid = change_applied.change
                         AND l.table_name = 'hosts'
                         AND r IS NOT NULL), false),
           a.phase,
           a.last_error,
           a.sites,
           a.sites IS NULL OR EXISTS (
               SELECT 1 FROM ipmanager.audit_log l
               WHERE l.xid = change_applied.change
                 AND ipmanager.agent_concerned(a.sites, a.dns_scope, l.table_name,
                                               ipmanager.audit_sites(l.table_name, l.old, l.new)))
    FROM ipmanager.agent_status a
    ORDER BY a.name
$$;

COMMENT ON FUNCTION ipmanager.change_applied(xid8) IS
    'For every agent: whether it applied the transaction change (from pg_current_xact_id() in that transaction): its applied snapshot contains it and none of the hosts it touched awaits a compaction there (agent_status.pending_hosts); whether the agent is alive, the sites it serves, and whether the change concerns it (see agent_concerned); only concerned live agents need to apply it.';

--------------------------------------------------------------------------------------------------
-- Compaction on request
--------------------------------------------------------------------------------------------------

-- A notification rather than a table: only agents listening now can compact now, and the CLI
-- waits for exactly those (alive ones). The payload is empty: every agent compacts. now() is
-- the start of the caller's transaction, so call it alone (autocommit); the notification goes
-- out at commit, and every agent's compacted_at after it is later.
CREATE FUNCTION ipmanager.request_compaction()
    RETURNS timestamptz
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('ipmanager_compact', '');
    RETURN now();
END
$$;

COMMENT ON FUNCTION ipmanager.request_compaction() IS
    'Asks every running agent for a compaction now (NOTIFY ipmanager_compact) and returns the time to compare agent_status.compacted_at with: an agent has compacted since when its compacted_at is at or after it.';

--------------------------------------------------------------------------------------------------
-- sync_status
--------------------------------------------------------------------------------------------------

-- As V4's view, with three more columns at the end.
CREATE OR REPLACE VIEW ipmanager.sync_status AS
SELECT a.name, a.db_user, a.host, a.version, a.phase,
       a.seen_at >= now() - 3 * a.heartbeat AS alive,
       a.seen_at, a.started_at, a.applied_at,
       (a.applied_snapshot IS NOT NULL AND p.pending_changes = 0) AS up_to_date,
       p.behind_since,
       p.pending_changes,
       a.files_hash, a.hosts, a.rows_skipped, a.last_error, a.last_error_at,
       a.sites, a.dns_scope,
       a.layout,
       CASE WHEN a.layout IS NOT NULL THEN coalesce(cardinality(a.pending_hosts), 0)
       END AS awaiting_compaction,
       a.compacted_at
FROM ipmanager.agent_status a
LEFT JOIN LATERAL (
    SELECT count(*) AS pending_changes, min(l.at) AS behind_since
    FROM ipmanager.audit_log l
    WHERE l.xid >= pg_snapshot_xmin(a.applied_snapshot)
      AND NOT pg_visible_in_snapshot(l.xid, a.applied_snapshot)
      AND ipmanager.agent_concerned(a.sites, a.dns_scope, l.table_name,
                                    ipmanager.audit_sites(l.table_name, l.old, l.new))
) p ON a.applied_snapshot IS NOT NULL;

COMMENT ON COLUMN ipmanager.sync_status.layout IS 'agent_status.layout';
COMMENT ON COLUMN ipmanager.sync_status.awaiting_compaction IS
    'Number of hosts whose change the agent has written but dnsmasq serves only after the next compaction (agent_status.pending_hosts); NULL for agents that report no layout.';
COMMENT ON COLUMN ipmanager.sync_status.compacted_at IS 'agent_status.compacted_at';

--------------------------------------------------------------------------------------------------
-- Privileges
--------------------------------------------------------------------------------------------------

GRANT INSERT (layout, pending_hosts, compacted_at), UPDATE (layout, pending_hosts, compacted_at)
    ON ipmanager.agent_status TO ipmanager_agent;

REVOKE ALL ON FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz, text[], text, text, bigint[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz, text[], text, text, bigint[], boolean) TO ipmanager_agent;

REVOKE ALL ON FUNCTION ipmanager.request_compaction() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.request_compaction() TO ipmanager_admin;
