-- ipmanager sites: named groups of subnets, so that each agent (one dnsmasq host per building or
-- site) serves only its own site's subnets, and so that "is my change live?" waits only for the
-- agents that serve what changed.
--
-- How this file is applied: like V1 and V2 (refinery in one transaction, or by hand with psql
-- -v ON_ERROR_STOP=1 -f ... after the earlier files), so no psql meta-commands, no BEGIN/COMMIT,
-- every object schema-qualified, PostgreSQL 13 or later. It redefines none of the hosts or
-- subnets validation functions: the site of a subnet is checked by a trigger of its own.
--
-- The model
--   * ipmanager.sites: one row per site, a name (the same rule as subnet and agent names) and a
--     comment.
--   * subnets.site: the site a subnet belongs to, NULL for none. A foreign key to sites.name ON
--     UPDATE CASCADE, so psql users write UPDATE ipmanager.subnets SET site = 'berlin' WHERE ...
--     and renaming a site carries its subnets along. ON DELETE RESTRICT: removing a site never
--     silently changes what an agent serves.
--   * agent_status.sites / dns_scope: what each agent reports it serves (NULL sites: every
--     enabled subnet, the behaviour before sites existed). change_applied and sync_status only
--     count an agent for a change when the change concerns it (agent_concerned below).
--
-- SQLSTATEs raised here
--   23514 check_violation        sites.name invalid; agent_report: invalid site or dns_scope
--   23503 foreign_key_violation  subnets.site names no site; a site still has subnets

--------------------------------------------------------------------------------------------------
-- Sites
--------------------------------------------------------------------------------------------------

CREATE TABLE ipmanager.sites (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL CONSTRAINT sites_name_unique UNIQUE,
    comment    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE ipmanager.sites IS
    'Sites (buildings, locations): named groups of subnets. An agent configured with [agent] sites serves only the subnets of those sites.';
COMMENT ON COLUMN ipmanager.sites.id IS 'Surrogate key (the audit log refers to it).';
COMMENT ON COLUMN ipmanager.sites.name IS
    'Unique name by which subnets (subnets.site) and agent configurations refer to the site: 1-63 letters, digits, ''-'', ''_'' or ''.'', starting with a letter or digit.';
COMMENT ON COLUMN ipmanager.sites.comment IS 'Free text for admins; never rendered.';
COMMENT ON COLUMN ipmanager.sites.created_at IS 'When the row was inserted.';
COMMENT ON COLUMN ipmanager.sites.updated_at IS 'When the row was last updated (maintained by a trigger).';

CREATE TRIGGER sites_touch_updated_at
    BEFORE UPDATE ON ipmanager.sites
    FOR EACH ROW EXECUTE FUNCTION ipmanager.touch_updated_at();

-- The same name rule as subnets.name and agent_status.name, with the same kind of message.
CREATE FUNCTION ipmanager.sites_validate()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.name IS NOT NULL AND NEW.name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' THEN
        RAISE EXCEPTION 'sites.name % is not a valid site name: 1 to 63 letters, digits, ''-'', ''_'' or ''.'', starting with a letter or digit',
                quote_literal(NEW.name)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'sites',
                  COLUMN = 'name', CONSTRAINT = 'sites_name_valid';
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.sites_validate() IS
    'BEFORE INSERT OR UPDATE trigger on sites: enforces the name rule with an admin-readable message.';

CREATE TRIGGER sites_validate
    BEFORE INSERT OR UPDATE ON ipmanager.sites
    FOR EACH ROW EXECUTE FUNCTION ipmanager.sites_validate();

-- The foreign key below is the race-free rule; this only gives its refusal readable words
-- (naming the site and its subnets), like V1's triggers do for theirs.
CREATE FUNCTION ipmanager.sites_keep_subnets()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    n_subnets bigint;
    example   text;
BEGIN
    SELECT count(*), min(s.name) INTO n_subnets, example
    FROM ipmanager.subnets s WHERE s.site = OLD.name;
    IF n_subnets > 0 THEN
        RAISE EXCEPTION 'site % still has % subnet(s), e.g. %: a site with subnets cannot be removed',
                quote_literal(OLD.name), n_subnets, quote_literal(example)
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = 'sites',
                  CONSTRAINT = 'subnets_site_fkey',
                  HINT = format('Move them to another site or to none first: ipmanager subnet set SUBNET --site none, or UPDATE ipmanager.subnets SET site = NULL WHERE site = %L.', OLD.name);
    END IF;
    RETURN OLD;
END
$$;

COMMENT ON FUNCTION ipmanager.sites_keep_subnets() IS
    'BEFORE DELETE trigger on sites: refuses to remove a site that subnets still belong to, naming them.';

CREATE TRIGGER sites_keep_subnets
    BEFORE DELETE ON ipmanager.sites
    FOR EACH ROW EXECUTE FUNCTION ipmanager.sites_keep_subnets();

--------------------------------------------------------------------------------------------------
-- subnets.site
--------------------------------------------------------------------------------------------------

ALTER TABLE ipmanager.subnets
    ADD COLUMN site text
        CONSTRAINT subnets_site_fkey REFERENCES ipmanager.sites (name)
        ON UPDATE CASCADE ON DELETE RESTRICT;

-- Serves the foreign key's checks on site removal and renames, and the agents' snapshot filter.
CREATE INDEX subnets_site ON ipmanager.subnets (site);

COMMENT ON COLUMN ipmanager.subnets.site IS
    'The site (sites.name) whose agents serve this subnet, or NULL: then only agents without a sites setting serve it. Renaming a site renames it here too.';

-- Readable words for a site that does not exist. The foreign key still decides (it also sees
-- sites removed by transactions this trigger cannot see yet). A separate trigger so that
-- subnets_validate stays as V1 (and later files) define it.
CREATE FUNCTION ipmanager.subnets_validate_site()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.site IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.site IS DISTINCT FROM OLD.site)
       AND NOT EXISTS (SELECT 1 FROM ipmanager.sites t WHERE t.name = NEW.site) THEN
        RAISE EXCEPTION 'subnets.site % of subnet % does not exist: a subnet can only belong to an existing site',
                quote_literal(NEW.site), quote_literal(NEW.name)
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'site', CONSTRAINT = 'subnets_site_fkey',
                  HINT = format('Create it first with ipmanager site add %s or INSERT INTO ipmanager.sites (name) VALUES (%L); NULL means no site.', NEW.site, NEW.site);
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.subnets_validate_site() IS
    'BEFORE INSERT OR UPDATE OF site trigger on subnets: refuses a site that does not exist with an admin-readable message (the foreign key subnets_site_fkey is the backstop).';

CREATE TRIGGER subnets_validate_site
    BEFORE INSERT OR UPDATE OF site ON ipmanager.subnets
    FOR EACH ROW EXECUTE FUNCTION ipmanager.subnets_validate_site();

--------------------------------------------------------------------------------------------------
-- Audit and notification, as for subnets and hosts
--------------------------------------------------------------------------------------------------

ALTER TABLE ipmanager.audit_log DROP CONSTRAINT audit_log_table_name_valid;
ALTER TABLE ipmanager.audit_log ADD CONSTRAINT audit_log_table_name_valid
    CHECK (table_name IN ('hosts', 'subnets', 'sites'));
COMMENT ON COLUMN ipmanager.audit_log.table_name IS '''hosts'', ''subnets'' or ''sites''.';

CREATE TRIGGER sites_audit_insert
    AFTER INSERT ON ipmanager.sites
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();
CREATE TRIGGER sites_audit_update
    AFTER UPDATE ON ipmanager.sites
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();
CREATE TRIGGER sites_audit_delete
    AFTER DELETE ON ipmanager.sites
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();
CREATE TRIGGER sites_audit_truncate
    BEFORE TRUNCATE ON ipmanager.sites
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();

CREATE TRIGGER sites_notify_change
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ipmanager.sites
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_change();

--------------------------------------------------------------------------------------------------
-- Notifications that name the sites
--------------------------------------------------------------------------------------------------

-- The same statements also notify ipmanager_site_changes, with the sites they touched: the
-- payload is 'table:site site ...' ('-' for subnets without site, nothing after the colon when
-- no row changed), or the bare table name when the sites are unknown (TRUNCATE) or too many for
-- a payload, which concerns every agent. An agent with [agent] sites listens here instead of on
-- ipmanager_changes and skips what concerns none of its sites (the rule of agent_concerned
-- below), so a change in one site costs the other sites' agents nothing. ipmanager_changes and
-- its payload stay as V1 defines them. The sites are those of the rows before and after the
-- change: for hosts, their subnets' sites as this statement sees them
-- (subnets_lock_hosts_for_site keeps that right against a concurrent move of the subnet).
CREATE FUNCTION ipmanager.notify_site_change()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    touched text[] := '{}';
    payload text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('ipmanager_site_changes', TG_TABLE_NAME);
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF TG_TABLE_NAME = 'hosts' THEN
            touched := touched || ARRAY(SELECT s.site FROM ipmanager.subnets s
                                        WHERE s.id IN (SELECT n.subnet_id FROM new_rows n));
        ELSIF TG_TABLE_NAME = 'subnets' THEN
            touched := touched || ARRAY(SELECT DISTINCT n.site FROM new_rows n);
        ELSE
            touched := touched || ARRAY(SELECT n.name FROM new_rows n);
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF TG_TABLE_NAME = 'hosts' THEN
            touched := touched || ARRAY(SELECT s.site FROM ipmanager.subnets s
                                        WHERE s.id IN (SELECT o.subnet_id FROM old_rows o));
        ELSIF TG_TABLE_NAME = 'subnets' THEN
            touched := touched || ARRAY(SELECT DISTINCT o.site FROM old_rows o);
        ELSE
            touched := touched || ARRAY(SELECT o.name FROM old_rows o);
        END IF;
    END IF;
    payload := TG_TABLE_NAME || ':'
               || coalesce((SELECT string_agg(DISTINCT coalesce(t, '-'), ' ') FROM unnest(touched) t), '');
    -- NOTIFY payloads must stay below 8000 bytes.
    IF octet_length(payload) > 7900 THEN
        payload := TG_TABLE_NAME;
    END IF;
    PERFORM pg_notify('ipmanager_site_changes', payload);
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION ipmanager.notify_site_change() IS
    'Statement-level AFTER trigger on hosts, subnets and sites: NOTIFY ipmanager_site_changes with ''table:site site ...'' (''-'': no site), or the bare table name when the sites are unknown.';

CREATE TRIGGER hosts_notify_sites_insert
    AFTER INSERT ON ipmanager.hosts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER hosts_notify_sites_update
    AFTER UPDATE ON ipmanager.hosts REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER hosts_notify_sites_delete
    AFTER DELETE ON ipmanager.hosts REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER hosts_notify_sites_truncate
    AFTER TRUNCATE ON ipmanager.hosts
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER subnets_notify_sites_insert
    AFTER INSERT ON ipmanager.subnets REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER subnets_notify_sites_update
    AFTER UPDATE ON ipmanager.subnets REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER subnets_notify_sites_delete
    AFTER DELETE ON ipmanager.subnets REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER subnets_notify_sites_truncate
    AFTER TRUNCATE ON ipmanager.subnets
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER sites_notify_sites_insert
    AFTER INSERT ON ipmanager.sites REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER sites_notify_sites_update
    AFTER UPDATE ON ipmanager.sites REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER sites_notify_sites_delete
    AFTER DELETE ON ipmanager.sites REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();
CREATE TRIGGER sites_notify_sites_truncate
    AFTER TRUNCATE ON ipmanager.sites
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_site_change();

-- A host write reads its subnet's site without locking the subnet row (the foreign key check's
-- FOR KEY SHARE does not conflict with an UPDATE of site). Without this, a host written while
-- its subnet moves to another site could be announced to the old site only, after the new
-- site's agent had taken its snapshot, and that agent would miss it until its periodic resync.
-- As for a renumbering (V1's subnets_lock_hosts), moving a subnet takes a SHARE lock on hosts:
-- it waits for host writers in flight, and host writers starting later wait for it and then see
-- the new site. Only a row whose site really changes takes it (also in the cascade of a site
-- rename), so subnet edits that rewrite the same site do not hold up host writes. Taken per row,
-- after the subnet row is locked: unlike a cidr change, a site change locks the row FOR NO KEY
-- UPDATE (site has no unique index), which the FOR KEY SHARE of a host insert's foreign key
-- check does not wait for, so the two cannot deadlock.
CREATE FUNCTION ipmanager.lock_hosts_for_site_move()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.site IS DISTINCT FROM OLD.site THEN
        LOCK TABLE ipmanager.hosts IN SHARE MODE;
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.lock_hosts_for_site_move() IS
    'BEFORE UPDATE OF site trigger on subnets: when a subnet moves to another site, locks hosts in SHARE mode so that host writes and the move serialise.';

CREATE TRIGGER subnets_lock_hosts_for_site
    BEFORE UPDATE OF site ON ipmanager.subnets
    FOR EACH ROW EXECUTE FUNCTION ipmanager.lock_hosts_for_site_move();

--------------------------------------------------------------------------------------------------
-- Which agents a change concerns
--------------------------------------------------------------------------------------------------

-- The sites one audit_log row touches, NULL standing for "a subnet without site": for a subnet
-- its site before and after, for a host the site of its subnet(s) before and after (as the
-- subnets are now: asked right after a change, that is the site that serves it), for a site its
-- name before and after. Rows logged before this file have no 'site' key: they had no site.
CREATE FUNCTION ipmanager.audit_sites(table_name text, old jsonb, new jsonb)
    RETURNS text[]
    LANGUAGE sql
    STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE audit_sites.table_name
        WHEN 'subnets' THEN ARRAY(
            SELECT r ->> 'site' FROM (VALUES (audit_sites.old), (audit_sites.new)) v(r)
            WHERE r IS NOT NULL)
        WHEN 'sites' THEN ARRAY(
            SELECT r ->> 'name' FROM (VALUES (audit_sites.old), (audit_sites.new)) v(r)
            WHERE r IS NOT NULL)
        WHEN 'hosts' THEN ARRAY(
            SELECT s.site FROM ipmanager.subnets s
            WHERE s.id IN (SELECT (r ->> 'subnet_id')::bigint
                           FROM (VALUES (audit_sites.old), (audit_sites.new)) v(r)
                           WHERE r IS NOT NULL))
    END
$$;

COMMENT ON FUNCTION ipmanager.audit_sites(text, jsonb, jsonb) IS
    'The sites an audit_log row touches (NULL element: a subnet without site).';

-- Whether an agent's files can depend on a change: an agent without sites serves everything; an
-- agent with sites serves what touches one of them; with dns_scope 'all' its addn-hosts holds
-- every enabled host's name, so every host or subnet change concerns it.
CREATE FUNCTION ipmanager.agent_concerned(agent_sites text[], dns_scope text,
                                          table_name text, change_sites text[])
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT agent_sites IS NULL
        OR change_sites && agent_sites
        OR (dns_scope = 'all' AND table_name IN ('hosts', 'subnets'))
$$;

COMMENT ON FUNCTION ipmanager.agent_concerned(text[], text, text, text[]) IS
    'True when an agent serving agent_sites (NULL: every subnet) with dns_scope can be affected by a change to table_name touching change_sites.';

--------------------------------------------------------------------------------------------------
-- Agents report their sites
--------------------------------------------------------------------------------------------------

ALTER TABLE ipmanager.agent_status
    ADD COLUMN sites text[],
    ADD COLUMN dns_scope text
        CONSTRAINT agent_status_dns_scope_valid CHECK (dns_scope IN ('sites', 'all'));

COMMENT ON COLUMN ipmanager.agent_status.sites IS
    'The sites the agent serves ([agent] sites), sorted; NULL: every enabled subnet (no sites configured, or an agent older than sites).';
COMMENT ON COLUMN ipmanager.agent_status.dns_scope IS
    'The agent''s [dnsmasq] dns_scope: ''sites'' (names of its own sites) or ''all'' (every enabled host''s name).';

-- An overload without defaults, so that calls with V2's eleven arguments (agents older than
-- sites) still reach V2's function unambiguously and leave these columns alone.
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
        dns_scope text)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad    text;
    -- Sorted and without repeats; NULL stays NULL (every subnet).
    served text[] := CASE WHEN agent_report.sites IS NOT NULL THEN
                         ARRAY(SELECT DISTINCT s FROM unnest(agent_report.sites) s ORDER BY s)
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
    PERFORM ipmanager.agent_report(agent_report.name, agent_report.phase, agent_report.heartbeat,
                                   agent_report.applied, agent_report.files_hash,
                                   agent_report.hosts, agent_report.rows_skipped,
                                   agent_report.error, agent_report.host, agent_report.version,
                                   agent_report.started_at);
    UPDATE ipmanager.agent_status a
    SET sites = served, dns_scope = agent_report.dns_scope
    WHERE a.name = agent_report.name
      AND (a.sites IS DISTINCT FROM served OR a.dns_scope IS DISTINCT FROM agent_report.dns_scope);
END
$$;

COMMENT ON FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz, text[], text) IS
    'agent_report with the sites the agent serves (NULL: every subnet) and its dns_scope; otherwise as the eleven-argument form.';

--------------------------------------------------------------------------------------------------
-- "Is my change live?" per site
--------------------------------------------------------------------------------------------------

-- Owner's rights, like sync_status: agents may call it without reading the audit log itself.
DROP FUNCTION ipmanager.change_applied(xid8);

CREATE FUNCTION ipmanager.change_applied(change xid8)
    RETURNS TABLE (name text, alive boolean, applied boolean, phase text, last_error text,
                   sites text[], concerned boolean)
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.name,
           a.seen_at >= now() - 3 * a.heartbeat,
           coalesce(pg_visible_in_snapshot(change_applied.change, a.applied_snapshot), false),
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
    'For every agent: whether its applied snapshot contains the transaction change (from pg_current_xact_id() in that transaction), whether the agent is alive, the sites it serves, and whether the change concerns it (see agent_concerned); only concerned live agents need to apply it.';

CREATE FUNCTION ipmanager.change_sites(change xid8)
    RETURNS text[]
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(
        SELECT DISTINCT s
        FROM ipmanager.audit_log l,
             unnest(ipmanager.audit_sites(l.table_name, l.old, l.new)) s
        WHERE l.xid = change_sites.change
        ORDER BY s NULLS LAST)
$$;

COMMENT ON FUNCTION ipmanager.change_sites(xid8) IS
    'The sites the transaction change touched, sorted; a NULL element stands for subnets without site. Empty when it logged no change.';

-- As V2's view, counting only the changes that concern each agent, plus its sites.
CREATE OR REPLACE VIEW ipmanager.sync_status AS
SELECT a.name, a.db_user, a.host, a.version, a.phase,
       a.seen_at >= now() - 3 * a.heartbeat AS alive,
       a.seen_at, a.started_at, a.applied_at,
       (a.applied_snapshot IS NOT NULL AND p.pending_changes = 0) AS up_to_date,
       p.behind_since,
       p.pending_changes,
       a.files_hash, a.hosts, a.rows_skipped, a.last_error, a.last_error_at,
       a.sites, a.dns_scope
FROM ipmanager.agent_status a
LEFT JOIN LATERAL (
    SELECT count(*) AS pending_changes, min(l.at) AS behind_since
    FROM ipmanager.audit_log l
    WHERE l.xid >= pg_snapshot_xmin(a.applied_snapshot)
      AND NOT pg_visible_in_snapshot(l.xid, a.applied_snapshot)
      AND ipmanager.agent_concerned(a.sites, a.dns_scope, l.table_name,
                                    ipmanager.audit_sites(l.table_name, l.old, l.new))
) p ON a.applied_snapshot IS NOT NULL;

COMMENT ON COLUMN ipmanager.sync_status.up_to_date IS
    'True when a snapshot was applied and no audit_log change that concerns the agent (see agent_concerned) is missing from it.';
COMMENT ON COLUMN ipmanager.sync_status.pending_changes IS
    'Number of audit_log rows concerning the agent that are missing from its applied snapshot; NULL before the first applied snapshot.';
COMMENT ON COLUMN ipmanager.sync_status.sites IS 'agent_status.sites';
COMMENT ON COLUMN ipmanager.sync_status.dns_scope IS 'agent_status.dns_scope';

--------------------------------------------------------------------------------------------------
-- Privileges, as for subnets and hosts
--------------------------------------------------------------------------------------------------

GRANT SELECT ON ipmanager.sites TO ipmanager_agent;
GRANT SELECT, INSERT, UPDATE, DELETE ON ipmanager.sites TO ipmanager_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA ipmanager TO ipmanager_admin;

GRANT INSERT (sites, dns_scope), UPDATE (sites, dns_scope)
    ON ipmanager.agent_status TO ipmanager_agent;

REVOKE ALL ON FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz, text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz, text[], text) TO ipmanager_agent;

REVOKE ALL ON FUNCTION ipmanager.change_applied(xid8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.change_applied(xid8) TO ipmanager_agent, ipmanager_admin;
REVOKE ALL ON FUNCTION ipmanager.change_sites(xid8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.change_sites(xid8) TO ipmanager_agent, ipmanager_admin;

GRANT SELECT ON ipmanager.sync_status TO ipmanager_agent, ipmanager_admin;
