-- ipmanager initial schema: subnets and DHCP reservations (hosts) that the agent renders into
-- dnsmasq configuration.
--
-- How this file is applied
--   * by `ipmanager migrate` (refinery), in one transaction, after refinery has created
--     ipmanager.schema_history; or
--   * by hand: psql -v ON_ERROR_STOP=1 -f sql/V1__initial_schema.sql <database>.
--   Hence no psql meta-commands and no BEGIN/COMMIT in here, and every object is schema-qualified
--   so that the caller's search_path does not matter. It must run on PostgreSQL 13 and later.
--
-- Why the rules live in the database
--   Administrators edit these tables with the ipmanager CLI *and* directly with psql. Every rule
--   that keeps the rendered dnsmasq files valid is therefore enforced here, by triggers that
--   raise messages meant to be read in psql output: they name the column (table.column), show
--   the offending value and state the rule, e.g.
--     hosts.hostname 'bad_name' is not a valid hostname: only letters, digits and ...
--   The errors also carry SQLSTATE, TABLE, COLUMN and CONSTRAINT fields so that programs can tell
--   them apart without parsing text (CONSTRAINT names the rule, e.g. hosts_hostname_valid; only
--   the unique, foreign key and exclusion ones are real constraints). Uniqueness is left to unique indexes: their standard message
--   ("duplicate key value violates unique constraint "hosts_ip_unique" DETAIL: Key (ip)=(...)
--   already exists.") already names the rule, the column and the value.
--
-- SQLSTATEs used by the triggers
--   23514 check_violation        a value breaks a rule of its own row
--   23503 foreign_key_violation  a host has no subnet (none given and none contains its IP, or
--                                the given one does not exist)
--   23502 not_null_violation     a host has no IP
--   23P01 exclusion_violation    two enabled subnets would overlap

CREATE SCHEMA IF NOT EXISTS ipmanager;

COMMENT ON SCHEMA ipmanager IS
    'ipmanager: subnets and DHCP reservations rendered into dnsmasq configuration by the ipmanager agent';

--------------------------------------------------------------------------------------------------
-- Shared rule functions
--
-- Each rule that applies to more than one column is written once, here, as a SQL function. The
-- per-row checks are IMMUTABLE plain SQL (not plpgsql) so that the planner can inline them into
-- the trigger expressions, which keeps 100,000-row inserts fast.
--------------------------------------------------------------------------------------------------

-- The one definition of a DNS name, used for hosts.hostname and subnets.domain.
--
-- RFC 1123 host names: dot-separated labels of ASCII letters, digits and hyphens, a label neither
-- starting nor ending with a hyphen, 1 to 63 characters per label, at most 253 in all, and no
-- trailing dot (dnsmasq wants the plain form). Everything else (spaces, commas, '#', newlines,
-- underscores, non-ASCII) is refused: several of those characters are syntax in dnsmasq files, so
-- letting them through would let a name rewrite the configuration it is rendered into.
--
-- In addition the last label must not be all digits. RFC 1123 section 2.1 requires this so that a
-- name can never look like a dotted-quad address; for dnsmasq it matters twice over, because in a
-- dhcp-host line a field that parses as an address is taken as the address and an all-digit field
-- is taken as the lease time, so a host named '10.0.0.7' or '3600' would silently become something
-- else.
--
-- PostgreSQL's regular expressions match character ranges by code point whatever the collation,
-- and '$' only matches at the very end (newlines are ordinary characters), so the pattern is as
-- strict as it reads.
CREATE FUNCTION ipmanager.is_valid_dns_name(name text)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT octet_length(name) <= 253
       AND name ~ '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'
       AND name !~ '(^|\.)[0-9]+$'
$$;

COMMENT ON FUNCTION ipmanager.is_valid_dns_name(text) IS
    'True when the argument is an RFC 1123 host/domain name: dot-separated labels of letters, digits '
    'and inner hyphens, 1-63 characters each, at most 253 in all, no trailing dot, last label not all '
    'digits. The single definition used for hosts.hostname and subnets.domain.';

-- Lease times as dnsmasq accepts them. The bounds are checked on the number of seconds, because
-- that is what the agent renders (extract(epoch from ...)); comparing intervals directly would
-- treat a month as 30 days and a year as 360, which disagrees with the seconds actually served.
-- dnsmasq raises anything below 2 minutes to 2 minutes (short leases confuse some clients), so a
-- smaller value would be a lie; 10 years is far below dnsmasq's 32-bit limit and far above any
-- sane lease. Fractions of a second cannot be expressed in dnsmasq's configuration.
CREATE FUNCTION ipmanager.is_valid_lease_time(lease interval)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT lease IS NULL
        OR (extract(epoch FROM lease) BETWEEN 120 AND extract(epoch FROM interval '10 years')
            AND extract(epoch FROM lease) = trunc(extract(epoch FROM lease)))
$$;

COMMENT ON FUNCTION ipmanager.is_valid_lease_time(interval) IS
    'True for NULL (use the default) or a whole number of seconds between 2 minutes and 10 years.';

-- Whether addr is an address a machine in subnet net may use: same family, inside the subnet and,
-- for IPv4 subnets larger than /31, neither the network nor the broadcast address (RFC 3021 lets
-- /31 point-to-point links use both of their addresses; a /32 is a single host). IPv6 has no
-- broadcast address, so only containment is checked there.
--
-- addr is expected as a host address (full mask), which the triggers normalise to first.
-- '<<=' rather than '<<' so that the single address of a /32 (or /128) subnet counts as inside.
CREATE FUNCTION ipmanager.is_host_address_of(addr inet, net cidr)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT family(addr) = family(net)
       AND addr <<= net
       AND (family(net) = 6
            OR masklen(net) >= 31
            OR (set_masklen(addr, 32) <> set_masklen(net::inet, 32)
                AND set_masklen(addr, 32) <> set_masklen(broadcast(net), 32)))
$$;

COMMENT ON FUNCTION ipmanager.is_host_address_of(inet, cidr) IS
    'True when addr is usable by a machine in subnet net: same family, inside, and for IPv4 subnets '
    'larger than /31 neither the network nor the broadcast address.';

-- The admin-readable explanation for is_host_address_of() being false, or NULL when it is true.
-- what names the column ('hosts.ip', 'subnets.gateway', ...); subnet_name and net describe the
-- subnet so that the message says which subnet was meant. Only called once a check has failed:
-- format() is STABLE, so this function cannot be inlined and is too slow for the per-row path.
CREATE FUNCTION ipmanager.host_address_problem(what text, addr inet, subnet_name text, net cidr)
    RETURNS text
    LANGUAGE sql
    STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN addr IS NULL OR net IS NULL OR ipmanager.is_host_address_of(addr, net) THEN NULL
        WHEN family(addr) <> family(net) THEN format(
            '%s %s is an IPv%s address but subnet %L (%s) is IPv%s: an address must be of its '
            'subnet''s family (IPv4 and IPv6 never mix in one subnet)',
            what, host(addr), family(addr), subnet_name, net, family(net))
        WHEN NOT addr <<= net THEN format(
            '%s %s is outside subnet %L (%s): an address must lie inside its subnet',
            what, host(addr), subnet_name, net)
        ELSE format(
            '%s %s is the %s address of subnet %L (%s): in an IPv4 subnet larger than /31 the '
            'network and broadcast addresses cannot be given to a machine',
            what, host(addr),
            CASE WHEN set_masklen(addr, 32) = set_masklen(net::inet, 32)
                 THEN 'network' ELSE 'broadcast' END,
            subnet_name, net)
    END
$$;

COMMENT ON FUNCTION ipmanager.host_address_problem(text, inet, text, cidr) IS
    'Explains why an address is not usable in a subnet (see is_host_address_of), or NULL when it is.';

-- Normalises an address to a host address (/32 or /128). inet keeps a netmask, so '10.0.0.5/24'
-- and '10.0.0.5' are different values that compare unequal; without this, uniqueness on hosts.ip
-- could be bypassed and the agent would see masks it does not expect.
CREATE FUNCTION ipmanager.host_address(addr inet)
    RETURNS inet
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT set_masklen(addr, CASE family(addr) WHEN 4 THEN 32 ELSE 128 END)
$$;

COMMENT ON FUNCTION ipmanager.host_address(inet) IS
    'The address with its netmask removed (/32 for IPv4, /128 for IPv6).';

--------------------------------------------------------------------------------------------------
-- Subnets
--------------------------------------------------------------------------------------------------

-- Overlap decision. Two CIDR blocks are either disjoint or one contains the other, so
-- "overlapping subnets" always means nesting. Among ENABLED subnets nesting is rejected: dnsmasq
-- would have two candidate subnets for one address, and "which subnet does this host belong to"
-- would depend on tie-breaking rules nobody reads. A DISABLED subnet may overlap anything, so a
-- renumbering can be staged (create the new subnet disabled, move hosts, then disable the old and
-- enable the new). The consequence is that at most one enabled subnet contains any address.
--
-- The rule is enforced twice: the subnets_validate trigger gives a readable message naming both
-- subnets, but cannot see rows that concurrent transactions have not committed yet; the exclusion
-- constraint subnets_enabled_no_overlap is the race-free backstop (its GiST index also serves the
-- trigger's lookups and hosts' "which subnet contains this IP" lookups). inet_ops is PostgreSQL's
-- built-in GiST operator class for inet/cidr, so no extension is needed.
CREATE TABLE ipmanager.subnets (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CONSTRAINT subnets_name_unique UNIQUE,
    cidr        cidr        NOT NULL CONSTRAINT subnets_cidr_unique UNIQUE,
    range_start inet,
    range_end   inet,
    gateway     inet,
    lease_time  interval,
    domain      text,
    enabled     boolean     NOT NULL DEFAULT true,
    comment     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subnets_enabled_no_overlap
        EXCLUDE USING gist (cidr inet_ops WITH &&) WHERE (enabled)
);

COMMENT ON TABLE ipmanager.subnets IS
    'Networks dnsmasq serves DHCP on. Enabled subnets never overlap (nest); disabled ones may, to stage a renumbering.';
COMMENT ON COLUMN ipmanager.subnets.id IS 'Surrogate key; hosts.subnet_id refers to it.';
COMMENT ON COLUMN ipmanager.subnets.name IS
    'Unique name by which admins and the rendered configuration refer to the subnet: 1-63 letters, digits, ''-'', ''_'' or ''.'', starting with a letter or digit.';
COMMENT ON COLUMN ipmanager.subnets.cidr IS
    'The network, e.g. 10.0.0.0/24 or 2001:db8::/64. May not overlap another enabled subnet.';
COMMENT ON COLUMN ipmanager.subnets.range_start IS
    'First address of the dynamic DHCP range, or NULL (with range_end) to serve reservations only. Stored without netmask.';
COMMENT ON COLUMN ipmanager.subnets.range_end IS
    'Last address of the dynamic DHCP range (>= range_start), or NULL together with range_start. Stored without netmask.';
COMMENT ON COLUMN ipmanager.subnets.gateway IS
    'Default router handed out to clients, or NULL for none. Inside the subnet. Stored without netmask.';
COMMENT ON COLUMN ipmanager.subnets.lease_time IS
    'DHCP lease time: NULL for dnsmasq''s default, else a whole number of seconds between 2 minutes and 10 years.';
COMMENT ON COLUMN ipmanager.subnets.domain IS
    'DNS domain for hosts of this subnet (RFC 1123, no trailing dot), or NULL.';
COMMENT ON COLUMN ipmanager.subnets.enabled IS
    'False: the subnet and all its hosts are not served, and it may overlap other subnets.';
COMMENT ON COLUMN ipmanager.subnets.comment IS 'Free text for admins; never rendered.';
COMMENT ON COLUMN ipmanager.subnets.created_at IS 'When the row was inserted.';
COMMENT ON COLUMN ipmanager.subnets.updated_at IS 'When the row was last updated (maintained by a trigger).';

--------------------------------------------------------------------------------------------------
-- Hosts (DHCP reservations)
--------------------------------------------------------------------------------------------------

-- subnet_id is NOT NULL but may be omitted: hosts_validate fills it with the enabled subnet that
-- contains the IP. ON DELETE RESTRICT because deleting a subnet must never silently delete
-- reservations.
--
-- IP addresses are unique across all subnets (two reservations of one address would hand it to
-- two machines). MAC addresses and host names are unique per subnet
-- only: one machine may have a reservation in an IPv4 and in an IPv6 subnet, or on two networks.
-- Host names compare case-insensitively because DNS does.
CREATE TABLE ipmanager.hosts (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subnet_id  bigint      NOT NULL
                           CONSTRAINT hosts_subnet_id_fkey REFERENCES ipmanager.subnets (id)
                           ON DELETE RESTRICT,
    mac        macaddr     NOT NULL,
    ip         inet        NOT NULL,
    hostname   text        NOT NULL,
    enabled    boolean     NOT NULL DEFAULT true,
    lease_time interval,
    comment    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT hosts_ip_unique UNIQUE (ip),
    CONSTRAINT hosts_subnet_mac_unique UNIQUE (subnet_id, mac)
);

-- An expression index, not a constraint, because UNIQUE constraints cannot hold expressions.
CREATE UNIQUE INDEX hosts_subnet_hostname_unique ON ipmanager.hosts (subnet_id, lower(hostname));

COMMENT ON TABLE ipmanager.hosts IS
    'DHCP reservations: a MAC address gets a fixed IP and host name in a subnet.';
COMMENT ON COLUMN ipmanager.hosts.id IS 'Surrogate key.';
COMMENT ON COLUMN ipmanager.hosts.subnet_id IS
    'The subnet the reservation belongs to; when omitted (NULL), the enabled subnet containing ip is filled in.';
COMMENT ON COLUMN ipmanager.hosts.mac IS
    'Hardware address of the client: unicast and not all-zero; unique within the subnet.';
COMMENT ON COLUMN ipmanager.hosts.ip IS
    'Reserved address: inside the subnet, not its IPv4 network/broadcast address, unique overall. Stored without netmask.';
COMMENT ON COLUMN ipmanager.hosts.hostname IS
    'RFC 1123 host name (letters, digits, inner hyphens, dot-separated labels); unique per subnet ignoring case.';
COMMENT ON COLUMN ipmanager.hosts.enabled IS 'False: the reservation is kept but not served.';
COMMENT ON COLUMN ipmanager.hosts.lease_time IS
    'Per-host lease time override: NULL for the subnet''s, else a whole number of seconds between 2 minutes and 10 years.';
COMMENT ON COLUMN ipmanager.hosts.comment IS 'Free text for admins; never rendered.';
COMMENT ON COLUMN ipmanager.hosts.created_at IS 'When the row was inserted.';
COMMENT ON COLUMN ipmanager.hosts.updated_at IS 'When the row was last updated (maintained by a trigger).';

--------------------------------------------------------------------------------------------------
-- updated_at
--------------------------------------------------------------------------------------------------

-- A trigger rather than trusting writers, so that psql edits keep it right too.
CREATE FUNCTION ipmanager.touch_updated_at()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.touch_updated_at() IS 'BEFORE UPDATE trigger: sets updated_at to now().';

CREATE TRIGGER subnets_touch_updated_at
    BEFORE UPDATE ON ipmanager.subnets
    FOR EACH ROW EXECUTE FUNCTION ipmanager.touch_updated_at();

CREATE TRIGGER hosts_touch_updated_at
    BEFORE UPDATE ON ipmanager.hosts
    FOR EACH ROW EXECUTE FUNCTION ipmanager.touch_updated_at();

--------------------------------------------------------------------------------------------------
-- Subnet validation
--------------------------------------------------------------------------------------------------

-- NULLs in NOT NULL columns are left alone here: the NOT NULL constraint, checked after BEFORE
-- triggers, reports them with its own standard message.
CREATE FUNCTION ipmanager.subnets_validate()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    other   record;
    n_bad   bigint;
    example inet;
BEGIN
    IF NEW.name IS NOT NULL AND NEW.name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' THEN
        RAISE EXCEPTION 'subnets.name % is not a valid subnet name: 1 to 63 letters, digits, ''-'', ''_'' or ''.'', starting with a letter or digit',
                quote_literal(NEW.name)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'name', CONSTRAINT = 'subnets_name_valid';
    END IF;

    -- dnsmasq refuses a DHCPv6 range with a shorter prefix (and then does not start), and reads
    -- addresses whose first 64 bits are zero as wildcards; the agent would skip such a subnet.
    IF family(NEW.cidr) = 6 AND masklen(NEW.cidr) < 64 THEN
        RAISE EXCEPTION 'subnets.cidr % is too large for DHCPv6: dnsmasq requires an IPv6 prefix length of at least /64',
                NEW.cidr
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'cidr', CONSTRAINT = 'subnets_ipv6_prefix_valid';
    END IF;
    IF family(NEW.cidr) = 6 AND NEW.cidr <<= '::/64'::cidr THEN
        RAISE EXCEPTION 'subnets.cidr % lies in ::/64, which dnsmasq reads as a wildcard for any prefix',
                NEW.cidr
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'cidr', CONSTRAINT = 'subnets_ipv6_prefix_valid';
    END IF;

    IF NEW.domain IS NOT NULL AND NOT ipmanager.is_valid_dns_name(NEW.domain) THEN
        RAISE EXCEPTION 'subnets.domain % is not a valid domain name: only letters, digits and inner hyphens in dot-separated labels of at most 63 characters, 253 in all, no trailing dot, last label not all digits (RFC 1123)',
                quote_literal(NEW.domain)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'domain', CONSTRAINT = 'subnets_domain_valid';
    END IF;

    IF NOT ipmanager.is_valid_lease_time(NEW.lease_time) THEN
        RAISE EXCEPTION 'subnets.lease_time % (% seconds) is out of range: a lease time must be a whole number of seconds between 2 minutes and 10 years',
                quote_literal(NEW.lease_time), extract(epoch FROM NEW.lease_time)::float8
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'lease_time', CONSTRAINT = 'subnets_lease_time_valid',
                  HINT = 'Use NULL for dnsmasq''s default lease time.';
    END IF;

    IF NEW.cidr IS NULL THEN
        RETURN NEW;
    END IF;

    -- Addresses are stored without netmask so that '10.0.0.100/24' and '10.0.0.100' mean the
    -- same and compare equal.
    NEW.range_start := ipmanager.host_address(NEW.range_start);
    NEW.range_end := ipmanager.host_address(NEW.range_end);
    NEW.gateway := ipmanager.host_address(NEW.gateway);

    IF (NEW.range_start IS NULL) <> (NEW.range_end IS NULL) THEN
        RAISE EXCEPTION 'subnets.range_start (%) and subnets.range_end (%) of subnet % must be set together: both NULL serves reservations only, both set gives a dynamic range',
                coalesce(host(NEW.range_start), 'NULL'), coalesce(host(NEW.range_end), 'NULL'),
                quote_literal(NEW.name)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = CASE WHEN NEW.range_start IS NULL THEN 'range_start' ELSE 'range_end' END,
                  CONSTRAINT = 'subnets_range_valid';
    END IF;

    IF NOT ipmanager.is_host_address_of(NEW.range_start, NEW.cidr) THEN
        RAISE EXCEPTION '%', ipmanager.host_address_problem('subnets.range_start', NEW.range_start, NEW.name, NEW.cidr)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'range_start', CONSTRAINT = 'subnets_range_valid';
    END IF;
    IF NOT ipmanager.is_host_address_of(NEW.range_end, NEW.cidr) THEN
        RAISE EXCEPTION '%', ipmanager.host_address_problem('subnets.range_end', NEW.range_end, NEW.name, NEW.cidr)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'range_end', CONSTRAINT = 'subnets_range_valid';
    END IF;

    IF NEW.range_start > NEW.range_end THEN
        RAISE EXCEPTION 'subnets.range_start % is after subnets.range_end % in subnet %: a DHCP range must run from its lower to its higher address (range_start <= range_end)',
                host(NEW.range_start), host(NEW.range_end), quote_literal(NEW.name)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'range_start', CONSTRAINT = 'subnets_range_valid';
    END IF;

    IF NOT ipmanager.is_host_address_of(NEW.gateway, NEW.cidr) THEN
        RAISE EXCEPTION '%', ipmanager.host_address_problem('subnets.gateway', NEW.gateway, NEW.name, NEW.cidr)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'gateway', CONSTRAINT = 'subnets_gateway_valid';
    END IF;

    -- Overlap among enabled subnets (see the decision above the table). Only re-checked when the
    -- answer can have changed. This is the friendly message; the exclusion constraint catches what
    -- this query cannot see (concurrent uncommitted inserts).
    IF NEW.enabled AND (TG_OP = 'INSERT' OR NOT OLD.enabled OR NEW.cidr <> OLD.cidr) THEN
        SELECT s.name, s.cidr INTO other
        FROM ipmanager.subnets s
        WHERE s.enabled AND s.cidr && NEW.cidr AND s.id <> NEW.id
        ORDER BY s.cidr
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'subnets.cidr % of subnet % overlaps enabled subnet % (%): enabled subnets must not overlap (% contains %)',
                    NEW.cidr, quote_literal(NEW.name), quote_literal(other.name), other.cidr,
                    CASE WHEN masklen(NEW.cidr) <= masklen(other.cidr) THEN NEW.cidr ELSE other.cidr END,
                    CASE WHEN masklen(NEW.cidr) <= masklen(other.cidr) THEN other.cidr ELSE NEW.cidr END
                USING ERRCODE = 'exclusion_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                      COLUMN = 'cidr', CONSTRAINT = 'subnets_enabled_no_overlap',
                      HINT = 'A disabled subnet may overlap others, e.g. to stage a renumbering: insert or update it with enabled = false.';
        END IF;
    END IF;

    -- Renumbering must not strand reservations: every host must still be a usable address of
    -- the subnet. Disabling is fine (its hosts are simply not served), so only a cidr change
    -- is checked. Concurrent host writes cannot slip past this check: see subnets_lock_hosts.
    IF TG_OP = 'UPDATE' AND NEW.cidr <> OLD.cidr THEN
        SELECT count(*), min(h.ip) INTO n_bad, example
        FROM ipmanager.hosts h
        WHERE h.subnet_id = NEW.id AND NOT ipmanager.is_host_address_of(h.ip, NEW.cidr);
        IF n_bad > 0 THEN
            RAISE EXCEPTION 'subnets.cidr of subnet % cannot change from % to %: % of its hosts would lie outside it or on its network/broadcast address, e.g. %',
                    quote_literal(NEW.name), OLD.cidr, NEW.cidr, n_bad, host(example)
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                      COLUMN = 'cidr', CONSTRAINT = 'subnets_cidr_keeps_hosts',
                      HINT = 'Move those hosts to another subnet or change their IPs first.';
        END IF;
    END IF;

    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.subnets_validate() IS
    'BEFORE INSERT OR UPDATE trigger on subnets: normalises addresses and enforces name, domain, lease time, range, gateway, overlap and keep-hosts-inside rules with admin-readable messages.';

CREATE TRIGGER subnets_validate
    BEFORE INSERT OR UPDATE ON ipmanager.subnets
    FOR EACH ROW EXECUTE FUNCTION ipmanager.subnets_validate();

-- Race between a renumbering and host writes. hosts_validate reads the subnet's cidr without
-- locking the subnet row (a row lock per inserted host made 100,000-row inserts markedly slower),
-- so a host could be checked against the old cidr while an uncommitted UPDATE changes it, and
-- the subnet check above cannot see that uncommitted host either. Instead, a statement that
-- may change cidr first takes a SHARE lock on hosts: it conflicts with the ROW EXCLUSIVE lock
-- every INSERT/UPDATE/DELETE on hosts holds until commit, so the renumbering waits for host
-- writers in flight (and then sees their rows), and host writes starting later wait for it (and
-- then read the new cidr). The lock is taken before any subnet row is locked, which avoids a
-- deadlock with the foreign key check of a host insert, and only by UPDATEs that name cidr, so
-- ordinary subnet edits do not block host writes. SHARE mode lets concurrent renumberings of
-- different subnets proceed. It needs UPDATE privilege on hosts, which ipmanager_admin has.
-- This relies on READ COMMITTED (PostgreSQL's default), where each query in a trigger sees
-- everything committed before it started.
CREATE FUNCTION ipmanager.lock_hosts_for_renumbering()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    LOCK TABLE ipmanager.hosts IN SHARE MODE;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION ipmanager.lock_hosts_for_renumbering() IS
    'Statement-level BEFORE UPDATE OF cidr trigger on subnets: locks hosts in SHARE mode so that host writes and renumberings serialise.';

CREATE TRIGGER subnets_lock_hosts
    BEFORE UPDATE OF cidr ON ipmanager.subnets
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.lock_hosts_for_renumbering();

--------------------------------------------------------------------------------------------------
-- Host validation
--------------------------------------------------------------------------------------------------

-- Runs once per row of every insert and update, so it does at most one indexed subnet lookup and
-- skips the checks whose inputs an UPDATE did not change (UPDATE hosts SET enabled = false on
-- 100,000 rows should not re-run the hostname regex 100,000 times). The subnet is read without a
-- row lock; subnets_lock_hosts keeps that safe against a concurrent renumbering.
CREATE FUNCTION ipmanager.hosts_validate()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    subnet record;
BEGIN
    IF NEW.ip IS NOT NULL THEN
        NEW.ip := ipmanager.host_address(NEW.ip);
    END IF;

    IF TG_OP = 'INSERT' OR NEW.hostname IS DISTINCT FROM OLD.hostname THEN
        IF NOT ipmanager.is_valid_dns_name(NEW.hostname) THEN
            RAISE EXCEPTION 'hosts.hostname % is not a valid hostname: only letters, digits and inner hyphens in dot-separated labels of at most 63 characters, 253 in all, no trailing dot, last label not all digits (RFC 1123)',
                    quote_literal(NEW.hostname)
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'hostname', CONSTRAINT = 'hosts_hostname_valid';
        END IF;
        -- dnsmasq reads a dhcp-host field as a keyword or lease time before it reads it as a
        -- name, so these valid DNS names would silently become "ignore this client" or a lease.
        IF lower(NEW.hostname) IN ('ignore', 'infinite') OR NEW.hostname ~ '^[0-9]+[smhdwSMHDW]$' THEN
            RAISE EXCEPTION 'hosts.hostname % is not usable as a hostname: dnsmasq reads ignore, infinite and digits with an s/m/h/d/w suffix as a keyword or lease time',
                    quote_literal(NEW.hostname)
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'hostname', CONSTRAINT = 'hosts_hostname_not_dnsmasq_keyword';
        END IF;
    END IF;

    IF TG_OP = 'INSERT' OR NEW.mac IS DISTINCT FROM OLD.mac THEN
        -- The I/G bit (lowest bit of the first octet) marks group addresses; the broadcast
        -- address ff:ff:ff:ff:ff:ff is one of them. No client sends DHCP from such an address,
        -- and the all-zero address is what broken or unset interfaces report.
        IF NEW.mac = '00:00:00:00:00:00'::macaddr THEN
            RAISE EXCEPTION 'hosts.mac % is the all-zero address: a DHCP reservation needs the unicast MAC address of a real interface',
                    NEW.mac
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'mac', CONSTRAINT = 'hosts_mac_unicast';
        ELSIF (NEW.mac & '01:00:00:00:00:00'::macaddr) <> '00:00:00:00:00:00'::macaddr THEN
            RAISE EXCEPTION 'hosts.mac % is a % address (lowest bit of the first octet set): a DHCP reservation needs the unicast MAC address of a real interface',
                    NEW.mac,
                    CASE WHEN NEW.mac = 'ff:ff:ff:ff:ff:ff'::macaddr THEN 'broadcast' ELSE 'multicast' END
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'mac', CONSTRAINT = 'hosts_mac_unicast';
        END IF;
    END IF;

    IF NOT ipmanager.is_valid_lease_time(NEW.lease_time) THEN
        RAISE EXCEPTION 'hosts.lease_time % (% seconds) is out of range: a lease time must be a whole number of seconds between 2 minutes and 10 years',
                quote_literal(NEW.lease_time), extract(epoch FROM NEW.lease_time)::float8
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                  COLUMN = 'lease_time', CONSTRAINT = 'hosts_lease_time_valid',
                  HINT = 'Use NULL to inherit the subnet''s lease time.';
    END IF;

    -- Said here rather than left to NOT NULL: subnet_id comes first in the table, so PostgreSQL
    -- would complain about the missing subnet_id, which the admin never had to give.
    IF NEW.ip IS NULL THEN
        RAISE EXCEPTION 'hosts.ip is NULL: a reservation needs an IP address (its subnet is found from it)'
            USING ERRCODE = 'not_null_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                  COLUMN = 'ip';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.ip = OLD.ip AND NEW.subnet_id IS NOT DISTINCT FROM OLD.subnet_id THEN
        RETURN NEW;
    END IF;

    IF NEW.subnet_id IS NULL THEN
        -- Overlap rules allow at most one enabled subnet to contain the IP; the ORDER BY keeps
        -- "most specific wins" should that decision ever be relaxed.
        SELECT s.id, s.name, s.cidr INTO subnet
        FROM ipmanager.subnets s
        WHERE s.enabled AND s.cidr >>= NEW.ip
        ORDER BY masklen(s.cidr) DESC
        LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'hosts.ip % is not inside any enabled subnet: a host without subnet_id is placed in the enabled subnet containing its IP, and there is none',
                    host(NEW.ip)
                USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'subnet_id', CONSTRAINT = 'hosts_subnet_id_fkey',
                      HINT = 'Create or enable a subnet containing this address first, or give subnet_id explicitly.';
        END IF;
        NEW.subnet_id := subnet.id;
    ELSE
        SELECT s.id, s.name, s.cidr INTO subnet
        FROM ipmanager.subnets s
        WHERE s.id = NEW.subnet_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'hosts.subnet_id % does not exist: a host must belong to an existing subnet',
                    NEW.subnet_id
                USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'subnet_id', CONSTRAINT = 'hosts_subnet_id_fkey',
                      HINT = 'Leave subnet_id NULL to use the enabled subnet containing the IP.';
        END IF;
    END IF;

    IF NOT ipmanager.is_host_address_of(NEW.ip, subnet.cidr) THEN
        RAISE EXCEPTION '%', ipmanager.host_address_problem('hosts.ip', NEW.ip, subnet.name, subnet.cidr)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                  COLUMN = 'ip', CONSTRAINT = 'hosts_ip_in_subnet',
                  HINT = 'Set subnet_id to the subnet that contains the address, or to NULL to pick the enabled subnet containing it.';
    END IF;

    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.hosts_validate() IS
    'BEFORE INSERT OR UPDATE trigger on hosts: normalises ip, fills a missing subnet_id and enforces hostname, MAC, lease time and address-in-subnet rules with admin-readable messages.';

CREATE TRIGGER hosts_validate
    BEFORE INSERT OR UPDATE ON ipmanager.hosts
    FOR EACH ROW EXECUTE FUNCTION ipmanager.hosts_validate();

--------------------------------------------------------------------------------------------------
-- Change notification
--------------------------------------------------------------------------------------------------

-- The agent LISTENs on ipmanager_changes and takes a new snapshot when notified; the payload is
-- the table name, for listeners that care. Statement-level triggers send one notification
-- per statement however many rows it touches (a 100,000-row INSERT sends one, not 100,000), and
-- PostgreSQL additionally folds identical notifications of one transaction into one. Statements
-- that touch no rows still notify; a spurious wake-up costs one snapshot, a missed one costs
-- correctness. TRUNCATE is included because it fires no row or DELETE triggers.
CREATE FUNCTION ipmanager.notify_change()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('ipmanager_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION ipmanager.notify_change() IS
    'Statement-level AFTER trigger: NOTIFY ipmanager_changes with the table name as payload.';

CREATE TRIGGER subnets_notify_change
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ipmanager.subnets
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_change();

CREATE TRIGGER hosts_notify_change
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ipmanager.hosts
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.notify_change();

--------------------------------------------------------------------------------------------------
-- Roles and privileges
--------------------------------------------------------------------------------------------------

-- Roles are cluster-wide while this file runs once per database, possibly for several databases
-- at the same time. "Create unless it exists" therefore has to tolerate both outcomes of a race:
-- duplicate_object when the role is already committed, unique_violation (on pg_authid's name
-- index) when another transaction created it but had not committed when we looked. The roles are
-- NOLOGIN groups: grant them to real login roles, e.g. GRANT ipmanager_agent TO dnsmasq_host1.
-- The role comment is only set by whoever created the role, so that concurrent runs never update
-- the same shared-catalog row. The existence check comes first because CREATE ROLE demands the
-- CREATEROLE privilege even when the role exists: only the very first migration in a cluster needs
-- it, later ones (e.g. run by a database owner without CREATEROLE) do not.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ipmanager_agent') THEN
        CREATE ROLE ipmanager_agent NOLOGIN;
        COMMENT ON ROLE ipmanager_agent IS
            'ipmanager agent: reads subnets and hosts and LISTENs for changes; cannot modify them.';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ipmanager_admin') THEN
        CREATE ROLE ipmanager_admin NOLOGIN;
        COMMENT ON ROLE ipmanager_admin IS
            'ipmanager administration: reads and modifies subnets and hosts.';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- GRANTs are per database, so they need no race protection. Nothing is revoked from PUBLIC: the
-- helper functions stay executable by everyone (they are pure), which the triggers need when
-- running as ipmanager_admin. The triggers run as the invoking role: they read subnets and hosts
-- and, for a renumbering, lock hosts in SHARE mode (which needs UPDATE on hosts), all of which
-- ipmanager_admin may do. LISTEN needs no privilege.
GRANT USAGE ON SCHEMA ipmanager TO ipmanager_agent, ipmanager_admin;
GRANT SELECT ON ipmanager.subnets, ipmanager.hosts TO ipmanager_agent;
GRANT SELECT, INSERT, UPDATE, DELETE ON ipmanager.subnets, ipmanager.hosts TO ipmanager_admin;
-- Identity columns do not strictly need it, but tools that call nextval()/currval() on the
-- sequences behind them do.
GRANT USAGE ON ALL SEQUENCES IN SCHEMA ipmanager TO ipmanager_admin;
