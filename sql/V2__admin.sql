-- ipmanager administration helpers: subnet lookup and address allocation, usage figures, an
-- append-only audit log of every change to subnets and hosts, and the agents' sync status.
--
-- How this file is applied: like V1 (refinery in one transaction, or by hand with
-- psql -v ON_ERROR_STOP=1 -f sql/V1__initial_schema.sql -f sql/V2__admin.sql <database>), so again
-- no psql meta-commands, no BEGIN/COMMIT, every object schema-qualified, PostgreSQL 13 or later
-- (xid8 and pg_snapshot appeared in 13). Never edit a file that has been released: refinery
-- checks its checksum; changes go into a new V<n> file.
--
-- SQLSTATEs raised here (in addition to V1's)
--   P0002 no_data_found          find_subnet: no subnet has that name or CIDR
--   IM001 (ipmanager-specific)   allocate_host: the subnet has no free address left
--   42501 insufficient_privilege agent_report: the agent name belongs to another database user
--   40001 serialization_failure  allocate_host in a REPEATABLE READ/SERIALIZABLE transaction lost
--                                a race for an address: retry the transaction
--   23514 check_violation        agent_report: invalid agent name

--------------------------------------------------------------------------------------------------
-- Address arithmetic helpers
--------------------------------------------------------------------------------------------------

-- Number of addresses from lo to hi inclusive, as numeric. inet - inet returns bigint, which
-- overflows for spans of 2^63 and more, and an IPv6 /64 holds 2^64 addresses. V1 allows no IPv6
-- subnet larger than /64, so both ends always lie in one /64: when they lie in different halves
-- of it (/65), the span is split at the start of the upper half, each part fitting a bigint.
CREATE FUNCTION ipmanager.address_span(lo inet, hi inet)
    RETURNS numeric
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN lo IS NULL OR hi IS NULL THEN NULL
        WHEN ipmanager.host_address(hi) < ipmanager.host_address(lo) THEN 0::numeric
        WHEN family(lo) = 4
          OR ipmanager.host_address(network(set_masklen(hi, 65))) <= ipmanager.host_address(lo)
            THEN (hi - lo)::numeric + 1
        ELSE (hi - ipmanager.host_address(network(set_masklen(hi, 65))))::numeric
           + ((ipmanager.host_address(network(set_masklen(hi, 65))) - 1) - lo)::numeric + 2
    END
$$;

COMMENT ON FUNCTION ipmanager.address_span(inet, inet) IS
    'Number of addresses from lo to hi inclusive (0 when hi < lo), as numeric so that IPv6 spans up to a whole /64 fit. Both ends must lie in one /64.';

-- The first and last address allocate_host may hand out in a subnet: IPv4 larger than /31
-- without network and broadcast address; /31 both, /32 its one address (RFC 3021); IPv6 without
-- the network address, which is the subnet-router anycast address (RFC 4291 2.6.1). For an IPv6
-- /128 first > last: nothing is usable.
CREATE FUNCTION ipmanager.usable_first(net cidr)
    RETURNS inet
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ipmanager.host_address(network(net))
           + CASE WHEN family(net) = 6 OR masklen(net) < 31 THEN 1 ELSE 0 END
$$;

COMMENT ON FUNCTION ipmanager.usable_first(cidr) IS
    'Lowest address of the subnet a host may get: the network address is skipped for IPv4 larger than /31 and for IPv6 (subnet-router anycast).';

CREATE FUNCTION ipmanager.usable_last(net cidr)
    RETURNS inet
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ipmanager.host_address(broadcast(net))
           - CASE WHEN family(net) = 4 AND masklen(net) < 31 THEN 1 ELSE 0 END
$$;

COMMENT ON FUNCTION ipmanager.usable_last(cidr) IS
    'Highest address of the subnet a host may get: the broadcast address is skipped for IPv4 larger than /31.';

--------------------------------------------------------------------------------------------------
-- Subnet lookup and allocation
--------------------------------------------------------------------------------------------------

-- Admins refer to subnets by name or by CIDR; one function resolves both so that the CLI and
-- psql users get the same answer and the same error. The name wins: a subnet may be named like
-- a CIDR of another one only if an admin insisted, and then the name is what they typed.
CREATE FUNCTION ipmanager.find_subnet(ref text)
    RETURNS ipmanager.subnets
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result ipmanager.subnets;
    net    cidr;
BEGIN
    SELECT * INTO result FROM ipmanager.subnets s WHERE s.name = ref;
    IF FOUND THEN
        RETURN result;
    END IF;
    -- Only reached for unknown names, so the cost of the exception block does not matter.
    BEGIN
        net := ref::cidr;
    EXCEPTION WHEN data_exception THEN
        net := NULL;
    END;
    IF net IS NOT NULL THEN
        SELECT * INTO result FROM ipmanager.subnets s WHERE s.cidr = net;
        IF FOUND THEN
            RETURN result;
        END IF;
    END IF;
    RAISE EXCEPTION 'subnet % does not exist: give a subnet name or CIDR as listed by ''ipmanager subnet list''',
            coalesce(quote_literal(ref), 'NULL')
        USING ERRCODE = 'no_data_found', SCHEMA = 'ipmanager', TABLE = 'subnets';
END
$$;

COMMENT ON FUNCTION ipmanager.find_subnet(text) IS
    'The subnet with this name, else the one with this CIDR (e.g. ''10.0.0.0/24''); raises P0002 (no_data_found) when there is none.';

-- A walk from the subnet's first usable address: the gateway and the dynamic range are stepped
-- over, and a taken address (any hosts.ip, whatever subnet the host belongs to: hosts of a
-- disabled overlapping subnet still own their address) is stepped over together with the whole
-- run of consecutive taken addresses that starts there. That run is found by reading
-- hosts_ip_unique in order from the candidate, with lead() on the streamed rows and LIMIT 1, so
-- only the hosts from the candidate to the first gap are read: no sort, no other subnet's hosts,
-- and the subnet's size (an IPv6 /64) never matters. The loop turns at most a few times: the
-- candidate only grows, past the gateway, the range and runs that end in a gap.
-- Comparisons use host addresses (/32, /128) throughout: inet ordering looks at the netmask too,
-- and BETWEEN on them is what lets the planner use the index (<<= cidr would only with a
-- constant).
CREATE FUNCTION ipmanager.next_free_address(subnet_id bigint)
    RETURNS inet
    LANGUAGE plpgsql
    STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    net       ipmanager.subnets;
    last      inet;
    candidate inet;
    run_end   inet;
BEGIN
    SELECT * INTO net FROM ipmanager.subnets sn WHERE sn.id = next_free_address.subnet_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    candidate := ipmanager.usable_first(net.cidr);
    last := ipmanager.usable_last(net.cidr);
    WHILE candidate <= last LOOP
        IF candidate = ipmanager.host_address(net.gateway) THEN
            run_end := candidate;
        ELSIF candidate BETWEEN ipmanager.host_address(net.range_start)
                            AND ipmanager.host_address(net.range_end) THEN
            run_end := ipmanager.host_address(net.range_end);
        ELSIF NOT EXISTS (SELECT 1 FROM ipmanager.hosts h WHERE h.ip = candidate) THEN
            RETURN candidate;
        ELSE
            SELECT t.ip INTO run_end
            FROM (SELECT h.ip, lead(h.ip) OVER (ORDER BY h.ip) AS next
                  FROM ipmanager.hosts h
                  WHERE h.ip BETWEEN candidate AND last) t
            WHERE t.ip = last OR t.next IS NULL OR t.next <> t.ip + 1
            ORDER BY t.ip
            LIMIT 1;
        END IF;
        IF run_end >= last THEN
            RETURN NULL;
        END IF;
        candidate := run_end + 1;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION ipmanager.next_free_address(bigint) IS
    'Lowest address of the subnet that allocate_host may give out: a host address of the subnet, not its network (IPv6: subnet-router anycast) or broadcast address, not the gateway, outside the dynamic range and not any hosts.ip; NULL when there is none.';

-- The lock: FOR NO KEY UPDATE on the subnet row serialises allocators of one subnet (the second
-- waits until the first commits, then READ COMMITTED gives its next statement a snapshot that
-- sees the first one's host), while the FOR KEY SHARE lock that the foreign key check of a plain
-- INSERT into hosts takes does not conflict with it. In REPEATABLE READ and SERIALIZABLE the
-- snapshot cannot move forward, so a lost race shows up as a unique violation on hosts.ip; it is
-- turned into a serialization failure (40001), which is what such callers retry on. In READ
-- COMMITTED a plain INSERT that took the address in the meantime is simply stepped over (a new
-- statement, a new snapshot), a few times at most.
CREATE FUNCTION ipmanager.allocate_host(
        mac macaddr,
        hostname text,
        subnet text,
        lease_time interval DEFAULT NULL,
        comment text DEFAULT NULL,
        enabled boolean DEFAULT true)
    RETURNS ipmanager.hosts
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    target     ipmanager.subnets;
    usage      record;
    addr       inet;
    result     ipmanager.hosts;
    constraint_name text;
    attempt    integer := 0;
BEGIN
    target := ipmanager.find_subnet(allocate_host.subnet);
    -- Re-read under the lock: a row locked after waiting is returned in its latest version, so
    -- the messages below describe the subnet as it is now.
    SELECT * INTO target FROM ipmanager.subnets s WHERE s.id = target.id FOR NO KEY UPDATE;

    LOOP
        attempt := attempt + 1;
        addr := ipmanager.next_free_address(target.id);
        IF addr IS NULL THEN
            SELECT * INTO usage FROM ipmanager.subnet_usage u WHERE u.id = target.id;
            RAISE EXCEPTION 'subnet % (%) has no free address outside its dynamic range: % usable addresses, % in the dynamic range, % for the gateway, % taken by reservations',
                    quote_literal(target.name), target.cidr, usage.addresses, usage.range_size,
                    usage.addresses - usage.range_size - usage.static_pool,
                    usage.static_pool - usage.free
                USING ERRCODE = 'IM001', SCHEMA = 'ipmanager', TABLE = 'subnets',
                      HINT = 'Give the host an IP explicitly (e.g. inside the dynamic range), shrink the dynamic range, delete unused reservations or use a larger subnet.';
        END IF;
        BEGIN
            INSERT INTO ipmanager.hosts AS h (subnet_id, mac, ip, hostname, lease_time, comment, enabled)
            VALUES (target.id, allocate_host.mac, addr, allocate_host.hostname,
                    allocate_host.lease_time, allocate_host.comment, allocate_host.enabled)
            RETURNING * INTO result;
            RETURN result;
        EXCEPTION WHEN unique_violation THEN
            GET STACKED DIAGNOSTICS constraint_name = CONSTRAINT_NAME;
            IF constraint_name IS DISTINCT FROM 'hosts_ip_unique' THEN
                RAISE;
            END IF;
            IF current_setting('transaction_isolation') <> 'read committed' THEN
                RAISE EXCEPTION 'allocate_host: address % in subnet % (%) was taken by a concurrent transaction: retry the transaction',
                        host(addr), quote_literal(target.name), target.cidr
                    USING ERRCODE = 'serialization_failure', SCHEMA = 'ipmanager', TABLE = 'hosts',
                          COLUMN = 'ip', CONSTRAINT = 'hosts_ip_unique';
            END IF;
            IF attempt >= 5 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
END
$$;

COMMENT ON FUNCTION ipmanager.allocate_host(macaddr, text, text, interval, text, boolean) IS
    'Creates a reservation with the next free address (see next_free_address) of the subnet given by name or CIDR; concurrent callers in one subnet queue on the subnet row. Full subnet: SQLSTATE IM001.';

--------------------------------------------------------------------------------------------------
-- Usage
--------------------------------------------------------------------------------------------------

-- numeric throughout because an IPv6 /64 has 2^64 addresses. The dynamic range and the gateway
-- are clipped to the usable addresses (IPv6 allows either on the network address, which is not
-- counted as usable). Taken addresses are counted over all hosts inside the subnet, like
-- next_free_address does, so free is exactly what allocate_host can still hand out.
CREATE VIEW ipmanager.subnet_usage AS
SELECT s.id, s.name, s.cidr, s.enabled, a.addresses, r.range_size,
       a.addresses - r.range_size - g.gateway_outside AS static_pool,
       (SELECT count(*) FROM ipmanager.hosts h WHERE h.subnet_id = s.id) AS reservations,
       a.addresses - r.range_size - g.gateway_outside - t.taken AS free,
       CASE WHEN a.addresses - r.range_size - g.gateway_outside > 0
            THEN round(100 * t.taken / (a.addresses - r.range_size - g.gateway_outside), 1)
       END AS used_percent
FROM ipmanager.subnets s
CROSS JOIN LATERAL (
    SELECT ipmanager.usable_first(s.cidr) AS f,
           ipmanager.usable_last(s.cidr) AS l,
           CASE WHEN family(s.cidr) = 4 AND masklen(s.cidr) < 31
                THEN trunc(power(2::numeric, 32 - masklen(s.cidr))) - 2
                WHEN family(s.cidr) = 4
                THEN trunc(power(2::numeric, 32 - masklen(s.cidr)))
                ELSE trunc(power(2::numeric, 128 - masklen(s.cidr))) - 1
           END AS addresses
) a
CROSS JOIN LATERAL (
    -- greatest/least ignore NULLs, so a subnet without range must be caught first
    SELECT CASE WHEN s.range_start IS NOT NULL THEN greatest(s.range_start, a.f) END AS lo,
           CASE WHEN s.range_end IS NOT NULL THEN least(s.range_end, a.l) END AS hi
) rc
CROSS JOIN LATERAL (
    SELECT coalesce(ipmanager.address_span(rc.lo, rc.hi), 0) AS range_size
) r
CROSS JOIN LATERAL (
    SELECT CASE WHEN s.gateway BETWEEN a.f AND a.l
                 AND NOT coalesce(s.gateway BETWEEN rc.lo AND rc.hi, false)
                THEN 1 ELSE 0 END AS gateway_outside
) g
CROSS JOIN LATERAL (
    SELECT count(*)::numeric AS taken
    FROM ipmanager.hosts h
    WHERE h.ip BETWEEN a.f AND a.l
      AND h.ip IS DISTINCT FROM s.gateway
      AND NOT coalesce(h.ip BETWEEN rc.lo AND rc.hi, false)
) t;

COMMENT ON VIEW ipmanager.subnet_usage IS
    'Address usage per subnet. numeric columns because an IPv6 /64 has 2^64 addresses.';
COMMENT ON COLUMN ipmanager.subnet_usage.id IS 'subnets.id';
COMMENT ON COLUMN ipmanager.subnet_usage.name IS 'subnets.name';
COMMENT ON COLUMN ipmanager.subnet_usage.cidr IS 'subnets.cidr';
COMMENT ON COLUMN ipmanager.subnet_usage.enabled IS 'subnets.enabled';
COMMENT ON COLUMN ipmanager.subnet_usage.addresses IS
    'Usable host addresses: IPv4 larger than /31 without network and broadcast, /31 2, /32 1; IPv6 without the network (subnet-router anycast) address.';
COMMENT ON COLUMN ipmanager.subnet_usage.range_size IS 'Addresses in the dynamic DHCP range (0 without a range).';
COMMENT ON COLUMN ipmanager.subnet_usage.static_pool IS
    'Usable addresses outside the dynamic range, minus the gateway when it lies outside the range: the addresses reservations can use.';
COMMENT ON COLUMN ipmanager.subnet_usage.reservations IS 'Hosts whose subnet_id is this subnet.';
COMMENT ON COLUMN ipmanager.subnet_usage.free IS
    'static_pool minus the distinct addresses in it taken by any host (also of overlapping disabled subnets): what allocate_host can still hand out.';
COMMENT ON COLUMN ipmanager.subnet_usage.used_percent IS
    'round(100 * (static_pool - free) / static_pool, 1); NULL when static_pool is 0.';

CREATE FUNCTION ipmanager.subnet_utilisation(subnet text)
    RETURNS SETOF ipmanager.subnet_usage
    LANGUAGE sql
    STABLE
AS $$
    SELECT u.* FROM ipmanager.subnet_usage u
    WHERE u.id = (ipmanager.find_subnet(subnet_utilisation.subnet)).id
$$;

COMMENT ON FUNCTION ipmanager.subnet_utilisation(text) IS
    'The subnet_usage row of the subnet given by name or CIDR (see find_subnet).';

--------------------------------------------------------------------------------------------------
-- Audit log
--------------------------------------------------------------------------------------------------

-- Who changed which reservation when, whether through the CLI or psql. xid lets sync_status tell
-- which changes an agent's snapshot already contains. Only the owner (who runs the migrations)
-- can modify it: the triggers below run as the owner, so nobody else needs write access.
CREATE TABLE ipmanager.audit_log (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    xid              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    db_user          text        NOT NULL,
    application_name text,
    client_addr      inet,
    table_name       text        NOT NULL
                                 CONSTRAINT audit_log_table_name_valid
                                 CHECK (table_name IN ('hosts', 'subnets')),
    operation        text        NOT NULL
                                 CONSTRAINT audit_log_operation_valid
                                 CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')),
    row_id           bigint      NOT NULL,
    old              jsonb,
    new              jsonb
);

CREATE INDEX audit_log_at ON ipmanager.audit_log (at);
CREATE INDEX audit_log_xid ON ipmanager.audit_log (xid);
CREATE INDEX audit_log_row ON ipmanager.audit_log (table_name, row_id);

COMMENT ON TABLE ipmanager.audit_log IS
    'Append-only history of every change to subnets and hosts, written by triggers; only its owner can modify it.';
COMMENT ON COLUMN ipmanager.audit_log.id IS 'Order of logging.';
COMMENT ON COLUMN ipmanager.audit_log.at IS 'Start of the changing transaction (now()).';
COMMENT ON COLUMN ipmanager.audit_log.xid IS
    'The changing transaction (pg_current_xact_id()); compare with an agent''s applied snapshot.';
COMMENT ON COLUMN ipmanager.audit_log.db_user IS 'The login that made the change (session_user).';
COMMENT ON COLUMN ipmanager.audit_log.application_name IS 'application_name of the changing session, e.g. ipmanager or psql.';
COMMENT ON COLUMN ipmanager.audit_log.client_addr IS 'Client address of the changing session; NULL for Unix-socket connections.';
COMMENT ON COLUMN ipmanager.audit_log.table_name IS '''hosts'' or ''subnets''.';
COMMENT ON COLUMN ipmanager.audit_log.operation IS 'INSERT, UPDATE, DELETE or TRUNCATE.';
COMMENT ON COLUMN ipmanager.audit_log.row_id IS 'id of the changed row.';
COMMENT ON COLUMN ipmanager.audit_log.old IS 'The row before the change (UPDATE, DELETE, TRUNCATE), as jsonb.';
COMMENT ON COLUMN ipmanager.audit_log.new IS 'The row after the change (INSERT, UPDATE), as jsonb.';

-- Statement-level with transition tables: one INSERT ... SELECT per statement instead of one
-- trigger call per row, so a 100,000-row INSERT into hosts stays fast. PostgreSQL allows
-- transition tables only on single-event triggers, hence one trigger per event, all sharing
-- this function. SECURITY DEFINER so that it may write the log nobody else may write; db_user is
-- session_user because current_user is the owner in here. The search_path is pinned, as for
-- every SECURITY DEFINER function, so that callers cannot substitute objects.
CREATE FUNCTION ipmanager.audit_change()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ipmanager.audit_log
            (db_user, application_name, client_addr, table_name, operation, row_id, new)
        SELECT session_user, current_setting('application_name'), inet_client_addr(),
               TG_TABLE_NAME, 'INSERT', n.id, to_jsonb(n)
        FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        -- id is an identity column and cannot normally change; the full join still logs both
        -- sides should someone run SET id = DEFAULT. updated_at alone is no change (it is set
        -- by a trigger on every UPDATE, also on one that rewrites the same values).
        INSERT INTO ipmanager.audit_log
            (db_user, application_name, client_addr, table_name, operation, row_id, old, new)
        SELECT session_user, current_setting('application_name'), inet_client_addr(),
               TG_TABLE_NAME, 'UPDATE', coalesce(n.id, o.id), o.row, n.row
        FROM (SELECT r.id, to_jsonb(r) AS row FROM old_rows r) o
        FULL JOIN (SELECT r.id, to_jsonb(r) AS row FROM new_rows r) n ON n.id = o.id
        WHERE (o.row - 'updated_at') IS DISTINCT FROM (n.row - 'updated_at');
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO ipmanager.audit_log
            (db_user, application_name, client_addr, table_name, operation, row_id, old)
        SELECT session_user, current_setting('application_name'), inet_client_addr(),
               TG_TABLE_NAME, 'DELETE', o.id, to_jsonb(o)
        FROM old_rows o;
    ELSIF TG_OP = 'TRUNCATE' THEN
        -- TRUNCATE fires no row triggers and has no transition table: read the rows while they
        -- are still there (BEFORE TRUNCATE).
        EXECUTE format(
            'INSERT INTO ipmanager.audit_log
                 (db_user, application_name, client_addr, table_name, operation, row_id, old)
             SELECT session_user, current_setting(''application_name''), inet_client_addr(),
                    %L, ''TRUNCATE'', o.id, to_jsonb(o)
             FROM %I.%I o',
            TG_TABLE_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION ipmanager.audit_change() IS
    'Statement-level trigger on subnets and hosts (AFTER INSERT/UPDATE/DELETE with transition tables new_rows/old_rows, BEFORE TRUNCATE): appends one audit_log row per changed row. SECURITY DEFINER: runs as the log''s owner.';

CREATE TRIGGER subnets_audit_insert
    AFTER INSERT ON ipmanager.subnets
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();
CREATE TRIGGER subnets_audit_update
    AFTER UPDATE ON ipmanager.subnets
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();
CREATE TRIGGER subnets_audit_delete
    AFTER DELETE ON ipmanager.subnets
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();
CREATE TRIGGER subnets_audit_truncate
    BEFORE TRUNCATE ON ipmanager.subnets
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();

CREATE TRIGGER hosts_audit_insert
    AFTER INSERT ON ipmanager.hosts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();
CREATE TRIGGER hosts_audit_update
    AFTER UPDATE ON ipmanager.hosts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();
CREATE TRIGGER hosts_audit_delete
    AFTER DELETE ON ipmanager.hosts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();
CREATE TRIGGER hosts_audit_truncate
    BEFORE TRUNCATE ON ipmanager.hosts
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.audit_change();

--------------------------------------------------------------------------------------------------
-- Agent sync status
--------------------------------------------------------------------------------------------------

-- Every agent reports here what it last did, so that admins can see whether a change has reached
-- every dnsmasq. db_user ties a row to the login that wrote it: row level security lets each
-- agent login write only its own rows, so one compromised or misconfigured agent cannot fake the
-- status of another.
CREATE TABLE ipmanager.agent_status (
    name             text        PRIMARY KEY
                                 CONSTRAINT agent_status_name_valid
                                 CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    db_user          name        NOT NULL DEFAULT current_user,
    host             text,
    version          text,
    started_at       timestamptz,
    seen_at          timestamptz NOT NULL,
    heartbeat        interval    NOT NULL
                                 CONSTRAINT agent_status_heartbeat_positive
                                 CHECK (heartbeat > interval '0'),
    phase            text        NOT NULL,
    applied_snapshot pg_snapshot,
    applied_at       timestamptz,
    files_hash       text,
    hosts            integer,
    rows_skipped     integer,
    last_error       text,
    last_error_at    timestamptz
);

COMMENT ON TABLE ipmanager.agent_status IS
    'One row per agent: what it last applied and whether it is alive. Written by ipmanager.agent_report; each agent login may write only its own rows (row level security).';
COMMENT ON COLUMN ipmanager.agent_status.name IS
    'The agent''s name (agent.name in its configuration): 1 to 63 letters, digits, ''-'', ''_'' or ''.'', starting with a letter or digit.';
COMMENT ON COLUMN ipmanager.agent_status.db_user IS 'The login that owns this row; only it may update the row.';
COMMENT ON COLUMN ipmanager.agent_status.host IS 'Host name of the machine the agent runs on.';
COMMENT ON COLUMN ipmanager.agent_status.version IS 'ipmanager version of the agent.';
COMMENT ON COLUMN ipmanager.agent_status.started_at IS 'When the agent process started.';
COMMENT ON COLUMN ipmanager.agent_status.seen_at IS 'Last report (now() of its transaction).';
COMMENT ON COLUMN ipmanager.agent_status.heartbeat IS 'Interval between the agent''s reports; alive while seen_at is within 3 heartbeats.';
COMMENT ON COLUMN ipmanager.agent_status.phase IS 'What the agent is doing or last did: starting, database_unreachable, in_sync, sync_failing, activation_failing or files_rejected.';
COMMENT ON COLUMN ipmanager.agent_status.applied_snapshot IS
    'pg_current_snapshot() of the transaction the agent read its last applied configuration in.';
COMMENT ON COLUMN ipmanager.agent_status.applied_at IS 'When that configuration was applied.';
COMMENT ON COLUMN ipmanager.agent_status.files_hash IS 'sha256 (hex) of the rendered files applied.';
COMMENT ON COLUMN ipmanager.agent_status.hosts IS 'Reservations in the applied configuration.';
COMMENT ON COLUMN ipmanager.agent_status.rows_skipped IS 'Rows the agent skipped as unrenderable in the applied configuration.';
COMMENT ON COLUMN ipmanager.agent_status.last_error IS 'Last error reported; kept after later successes, as history.';
COMMENT ON COLUMN ipmanager.agent_status.last_error_at IS 'When last_error was reported.';

ALTER TABLE ipmanager.agent_status ENABLE ROW LEVEL SECURITY;

CREATE POLICY agent_status_read ON ipmanager.agent_status
    FOR SELECT TO ipmanager_agent, ipmanager_admin USING (true);
CREATE POLICY agent_status_agent_insert ON ipmanager.agent_status
    FOR INSERT TO ipmanager_agent WITH CHECK (db_user = current_user);
CREATE POLICY agent_status_agent_update ON ipmanager.agent_status
    FOR UPDATE TO ipmanager_agent USING (db_user = current_user) WITH CHECK (db_user = current_user);
CREATE POLICY agent_status_admin_delete ON ipmanager.agent_status
    FOR DELETE TO ipmanager_admin USING (true);

COMMENT ON POLICY agent_status_read ON ipmanager.agent_status IS 'Agents and admins see every agent''s status.';
COMMENT ON POLICY agent_status_agent_insert ON ipmanager.agent_status IS 'An agent login creates rows for itself only.';
COMMENT ON POLICY agent_status_agent_update ON ipmanager.agent_status IS 'An agent login updates its own rows only and cannot give them away.';
COMMENT ON POLICY agent_status_admin_delete ON ipmanager.agent_status IS 'Admins may forget a retired agent.';

-- Upsert of the caller's row. SECURITY INVOKER so that row level security applies to the
-- caller; the ownership check in front gives a readable message instead of the policy error.
CREATE FUNCTION ipmanager.agent_report(
        name text,
        phase text,
        heartbeat interval,
        applied pg_snapshot DEFAULT NULL,
        files_hash text DEFAULT NULL,
        hosts integer DEFAULT NULL,
        rows_skipped integer DEFAULT NULL,
        error text DEFAULT NULL,
        host text DEFAULT NULL,
        version text DEFAULT NULL,
        started_at timestamptz DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    owner name;
BEGIN
    IF agent_report.name IS NULL OR agent_report.name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' THEN
        RAISE EXCEPTION 'agent_status.name % is not a valid agent name: 1 to 63 letters, digits, ''-'', ''_'' or ''.'', starting with a letter or digit',
                coalesce(quote_literal(agent_report.name), 'NULL')
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'agent_status',
                  COLUMN = 'name', CONSTRAINT = 'agent_status_name_valid';
    END IF;

    SELECT a.db_user INTO owner FROM ipmanager.agent_status a WHERE a.name = agent_report.name;
    IF FOUND AND owner <> current_user THEN
        RAISE EXCEPTION 'agent name % is already used by database user %: give every agent its own agent.name',
                quote_literal(agent_report.name), quote_literal(owner)
            USING ERRCODE = 'insufficient_privilege', SCHEMA = 'ipmanager', TABLE = 'agent_status',
                  COLUMN = 'name';
    END IF;

    INSERT INTO ipmanager.agent_status AS a
        (name, host, version, started_at, seen_at, heartbeat, phase,
         applied_snapshot, applied_at, files_hash, hosts, rows_skipped, last_error, last_error_at)
    VALUES (agent_report.name, agent_report.host, agent_report.version, agent_report.started_at,
            now(), agent_report.heartbeat, agent_report.phase,
            agent_report.applied,
            CASE WHEN agent_report.applied IS NOT NULL THEN now() END,
            CASE WHEN agent_report.applied IS NOT NULL THEN agent_report.files_hash END,
            CASE WHEN agent_report.applied IS NOT NULL THEN agent_report.hosts END,
            CASE WHEN agent_report.applied IS NOT NULL THEN agent_report.rows_skipped END,
            agent_report.error,
            CASE WHEN agent_report.error IS NOT NULL THEN now() END)
    ON CONFLICT ON CONSTRAINT agent_status_pkey DO UPDATE SET
        seen_at = EXCLUDED.seen_at,
        heartbeat = EXCLUDED.heartbeat,
        phase = EXCLUDED.phase,
        host = coalesce(EXCLUDED.host, a.host),
        version = coalesce(EXCLUDED.version, a.version),
        started_at = coalesce(EXCLUDED.started_at, a.started_at),
        applied_snapshot = CASE WHEN agent_report.applied IS NOT NULL
                                THEN EXCLUDED.applied_snapshot ELSE a.applied_snapshot END,
        applied_at = CASE WHEN agent_report.applied IS NOT NULL
                          THEN EXCLUDED.applied_at ELSE a.applied_at END,
        files_hash = CASE WHEN agent_report.applied IS NOT NULL
                          THEN EXCLUDED.files_hash ELSE a.files_hash END,
        hosts = CASE WHEN agent_report.applied IS NOT NULL
                     THEN EXCLUDED.hosts ELSE a.hosts END,
        rows_skipped = CASE WHEN agent_report.applied IS NOT NULL
                            THEN EXCLUDED.rows_skipped ELSE a.rows_skipped END,
        last_error = coalesce(EXCLUDED.last_error, a.last_error),
        last_error_at = coalesce(EXCLUDED.last_error_at, a.last_error_at);
END
$$;

COMMENT ON FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz) IS
    'Called by the agent after every sync outcome and liveness tick: upserts its agent_status row (seen_at, phase, heartbeat; applied snapshot and its details when applied is given; last error when error is given). A name owned by another login raises 42501.';

-- up_to_date: no logged change is missing from the applied snapshot. Changes older than the
-- snapshot's xmin are in it by definition, so only audit rows from xmin on are looked at (index
-- audit_log_xid). The view runs with its owner's rights, so agents can see these counts without
-- being able to read the log itself.
CREATE VIEW ipmanager.sync_status AS
SELECT a.name, a.db_user, a.host, a.version, a.phase,
       a.seen_at >= now() - 3 * a.heartbeat AS alive,
       a.seen_at, a.started_at, a.applied_at,
       (a.applied_snapshot IS NOT NULL AND p.pending_changes = 0) AS up_to_date,
       p.behind_since,
       p.pending_changes,
       a.files_hash, a.hosts, a.rows_skipped, a.last_error, a.last_error_at
FROM ipmanager.agent_status a
LEFT JOIN LATERAL (
    SELECT count(*) AS pending_changes, min(l.at) AS behind_since
    FROM ipmanager.audit_log l
    WHERE l.xid >= pg_snapshot_xmin(a.applied_snapshot)
      AND NOT pg_visible_in_snapshot(l.xid, a.applied_snapshot)
) p ON a.applied_snapshot IS NOT NULL;

COMMENT ON VIEW ipmanager.sync_status IS
    'Per agent: alive (reported within 3 heartbeats) and up_to_date (its applied snapshot contains every logged change), with the oldest missing change and their count.';
COMMENT ON COLUMN ipmanager.sync_status.name IS 'agent_status.name';
COMMENT ON COLUMN ipmanager.sync_status.db_user IS 'agent_status.db_user';
COMMENT ON COLUMN ipmanager.sync_status.host IS 'agent_status.host';
COMMENT ON COLUMN ipmanager.sync_status.version IS 'agent_status.version';
COMMENT ON COLUMN ipmanager.sync_status.phase IS 'agent_status.phase';
COMMENT ON COLUMN ipmanager.sync_status.alive IS 'seen_at >= now() - 3 * heartbeat.';
COMMENT ON COLUMN ipmanager.sync_status.seen_at IS 'agent_status.seen_at';
COMMENT ON COLUMN ipmanager.sync_status.started_at IS 'agent_status.started_at';
COMMENT ON COLUMN ipmanager.sync_status.applied_at IS 'agent_status.applied_at';
COMMENT ON COLUMN ipmanager.sync_status.up_to_date IS
    'True when a snapshot was applied and no audit_log change is missing from it.';
COMMENT ON COLUMN ipmanager.sync_status.behind_since IS 'Time of the oldest change missing from the applied snapshot; NULL when none.';
COMMENT ON COLUMN ipmanager.sync_status.pending_changes IS 'Number of audit_log rows missing from the applied snapshot; NULL before the first applied snapshot.';
COMMENT ON COLUMN ipmanager.sync_status.files_hash IS 'agent_status.files_hash';
COMMENT ON COLUMN ipmanager.sync_status.hosts IS 'agent_status.hosts';
COMMENT ON COLUMN ipmanager.sync_status.rows_skipped IS 'agent_status.rows_skipped';
COMMENT ON COLUMN ipmanager.sync_status.last_error IS 'agent_status.last_error';
COMMENT ON COLUMN ipmanager.sync_status.last_error_at IS 'agent_status.last_error_at';

CREATE FUNCTION ipmanager.change_applied(change xid8)
    RETURNS TABLE (name text, alive boolean, applied boolean, phase text, last_error text)
    LANGUAGE sql
    STABLE
AS $$
    SELECT a.name,
           a.seen_at >= now() - 3 * a.heartbeat,
           coalesce(pg_visible_in_snapshot(change_applied.change, a.applied_snapshot), false),
           a.phase,
           a.last_error
    FROM ipmanager.agent_status a
    ORDER BY a.name
$$;

COMMENT ON FUNCTION ipmanager.change_applied(xid8) IS
    'For every agent: whether its applied snapshot contains the transaction change (from pg_current_xact_id() in that transaction), and whether the agent is alive.';

--------------------------------------------------------------------------------------------------
-- Privileges
--------------------------------------------------------------------------------------------------

-- GRANT and REVOKE are idempotent, so re-running them (or applying this file to a database where
-- the roles already hold some of them) is harmless. The roles themselves come from V1.

-- Append-only log: nobody but the owner writes it (the triggers run as the owner).
REVOKE ALL ON ipmanager.audit_log FROM PUBLIC;
GRANT SELECT ON ipmanager.audit_log TO ipmanager_admin;
REVOKE ALL ON FUNCTION ipmanager.audit_change() FROM PUBLIC;

REVOKE ALL ON ipmanager.agent_status FROM PUBLIC;
GRANT SELECT ON ipmanager.agent_status TO ipmanager_agent, ipmanager_admin;
-- Column-level: db_user only ever comes from its DEFAULT (current_user), and a row's name is
-- never changed (the upsert conflicts on it).
GRANT INSERT (name, host, version, started_at, seen_at, heartbeat, phase, applied_snapshot,
              applied_at, files_hash, hosts, rows_skipped, last_error, last_error_at)
    ON ipmanager.agent_status TO ipmanager_agent;
GRANT UPDATE (host, version, started_at, seen_at, heartbeat, phase, applied_snapshot,
              applied_at, files_hash, hosts, rows_skipped, last_error, last_error_at)
    ON ipmanager.agent_status TO ipmanager_agent;
GRANT DELETE ON ipmanager.agent_status TO ipmanager_admin;

REVOKE ALL ON FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz) TO ipmanager_agent;

REVOKE ALL ON FUNCTION ipmanager.change_applied(xid8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.change_applied(xid8) TO ipmanager_agent, ipmanager_admin;

-- allocate_host writes hosts with the caller's rights, so only admins can use it anyway.
REVOKE ALL ON FUNCTION ipmanager.allocate_host(macaddr, text, text, interval, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.allocate_host(macaddr, text, text, interval, text, boolean) TO ipmanager_admin;

GRANT SELECT ON ipmanager.subnet_usage, ipmanager.sync_status TO ipmanager_agent, ipmanager_admin;
