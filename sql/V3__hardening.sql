-- ipmanager hardening (issue 9): duplicates explained by the triggers in the same words as the
-- CLI, hints that speak of the CLI's options too, and one MAC address grammar (parse_mac) for
-- the functions that take a MAC, the same as the CLI's and the imports'; infinite leases.
--
-- How this file is applied: like V1 and V2 (refinery in one transaction, or by hand with
-- psql -v ON_ERROR_STOP=1 -f sql/V1__initial_schema.sql -f sql/V2__admin.sql -f sql/V3__hardening.sql
-- <database>): no psql meta-commands, no BEGIN/COMMIT, every object schema-qualified, PostgreSQL
-- 13 or later. V1 and V2 are released and never edited; what changes here is redefined with
-- CREATE OR REPLACE.
--
-- SQLSTATEs raised here (in addition to V1's and V2's)
--   23505 unique_violation       a duplicate subnet name or CIDR, host IP, or MAC or host name
--                                within a subnet: raised by the triggers with a readable message
--                                (CONSTRAINT names the unique constraint), or by the constraint
--                                itself when the other row is not committed yet
--   22P02 invalid_text_representation  parse_mac, allocate_host: not a MAC address

--------------------------------------------------------------------------------------------------
-- Subnet validation: duplicates in words
--------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION ipmanager.subnets_validate()
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

    -- Duplicates, in words; subnets_name_unique and subnets_cidr_unique stay the race-proof
    -- backstop for rows that concurrent transactions have not committed yet.
    IF TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name THEN
        SELECT s.cidr INTO other FROM ipmanager.subnets s WHERE s.name = NEW.name AND s.id <> NEW.id;
        IF FOUND THEN
            RAISE EXCEPTION 'subnets.name % is already used (by %): subnet names are unique',
                    quote_literal(NEW.name), other.cidr
                USING ERRCODE = 'unique_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                      COLUMN = 'name', CONSTRAINT = 'subnets_name_unique';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.cidr IS DISTINCT FROM OLD.cidr THEN
        SELECT s.name INTO other FROM ipmanager.subnets s WHERE s.cidr = NEW.cidr AND s.id <> NEW.id;
        IF FOUND THEN
            RAISE EXCEPTION 'subnets.cidr % already exists (subnet %): every network is entered once',
                    NEW.cidr, quote_literal(other.name)
                USING ERRCODE = 'unique_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                      COLUMN = 'cidr', CONSTRAINT = 'subnets_cidr_unique';
        END IF;
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

    NEW.lease_time := ipmanager.normalise_lease_time(NEW.lease_time);
    IF NOT ipmanager.is_valid_lease_time(NEW.lease_time) THEN
        RAISE EXCEPTION 'subnets.lease_time % (% seconds) is out of range: a lease time must be a whole number of seconds between 2 minutes and 10 years, or infinite',
                quote_literal(NEW.lease_time), extract(epoch FROM NEW.lease_time)::float8
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'lease_time', CONSTRAINT = 'subnets_lease_time_valid',
                  HINT = 'Use NULL for dnsmasq''s default lease time, or ipmanager.infinite_lease() (--lease-time infinite in the CLI) for one that never ends.';
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
    'BEFORE INSERT OR UPDATE trigger on subnets: normalises addresses and enforces name, domain, lease time, range, gateway, uniqueness (name, CIDR), overlap and keep-hosts-inside rules with admin-readable messages.';


--------------------------------------------------------------------------------------------------
-- Host validation: duplicates in words, hints in the CLI's words too
--------------------------------------------------------------------------------------------------

-- The words for a duplicate host value, naming the reservation that holds it: one text for the
-- trigger below and for `ipmanager import`, which judges a whole file in one statement and must
-- say what psql says. rule: 1 the IP, 2 the MAC in the subnet, 3 the host name in the subnet.
CREATE FUNCTION ipmanager.host_duplicate_message(rule int, ip inet, mac macaddr, hostname text,
                                                 subnet_id bigint, other_ip inet,
                                                 other_mac macaddr, other_hostname text)
    RETURNS text
    LANGUAGE sql
    STABLE
AS $$
    SELECT CASE rule
        WHEN 1 THEN format('hosts.ip %s is already reserved (for %s, %s): an IP address can have only one reservation',
                           host(ip), quote_literal(other_hostname), other_mac)
        WHEN 2 THEN format('hosts.mac %s already has a reservation in subnet %s (%s, %s): a MAC address has at most one reservation per subnet',
                           mac, quote_literal((SELECT s.name FROM ipmanager.subnets s WHERE s.id = subnet_id)),
                           quote_literal(other_hostname), host(other_ip))
        WHEN 3 THEN format('hosts.hostname %s is already used in subnet %s (%s, %s): host names are unique per subnet, ignoring case',
                           quote_literal(hostname), quote_literal((SELECT s.name FROM ipmanager.subnets s WHERE s.id = subnet_id)),
                           other_mac, host(other_ip))
    END
$$;

COMMENT ON FUNCTION ipmanager.host_duplicate_message(int, inet, macaddr, text, bigint, inet, macaddr, text) IS
    'The message for a duplicate host IP (rule 1), MAC (2) or host name (3), naming the reservation that holds it; used by hosts_validate and by ipmanager import.';

-- As V1's, plus the duplicate check at the end. The subnet is looked up only when the address or
-- subnet changes, as before; the duplicate check only when a unique value changes.
CREATE OR REPLACE FUNCTION ipmanager.hosts_validate()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    subnet record;
    other  record;
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

    NEW.lease_time := ipmanager.normalise_lease_time(NEW.lease_time);
    IF NOT ipmanager.is_valid_lease_time(NEW.lease_time) THEN
        RAISE EXCEPTION 'hosts.lease_time % (% seconds) is out of range: a lease time must be a whole number of seconds between 2 minutes and 10 years, or infinite',
                quote_literal(NEW.lease_time), extract(epoch FROM NEW.lease_time)::float8
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                  COLUMN = 'lease_time', CONSTRAINT = 'hosts_lease_time_valid',
                  HINT = 'Use NULL to inherit the subnet''s lease time, or ipmanager.infinite_lease() (--lease-time infinite in the CLI) for one that never ends.';
    END IF;

    -- Said here rather than left to NOT NULL: subnet_id comes first in the table, so PostgreSQL
    -- would complain about the missing subnet_id, which the admin never had to give.
    IF NEW.ip IS NULL THEN
        RAISE EXCEPTION 'hosts.ip is NULL: a reservation needs an IP address (its subnet is found from it)'
            USING ERRCODE = 'not_null_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                  COLUMN = 'ip';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.ip <> OLD.ip OR NEW.subnet_id IS DISTINCT FROM OLD.subnet_id THEN
        IF NEW.subnet_id IS NULL THEN
            -- Overlap rules allow at most one enabled subnet to contain the IP; the ORDER BY
            -- keeps "most specific wins" should that decision ever be relaxed.
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
                          HINT = 'Create or enable a subnet containing this address first, or name one (--subnet in the CLI, subnet_id in SQL).';
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
                          HINT = 'Name no subnet (omit --subnet in the CLI, subnet_id NULL in SQL) to use the enabled subnet containing the IP.';
            END IF;
        END IF;

        IF NOT ipmanager.is_host_address_of(NEW.ip, subnet.cidr) THEN
            RAISE EXCEPTION '%', ipmanager.host_address_problem('hosts.ip', NEW.ip, subnet.name, subnet.cidr)
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'ip', CONSTRAINT = 'hosts_ip_in_subnet',
                      HINT = 'Name the subnet that contains the address (--subnet in the CLI, subnet_id in SQL), or none to pick the enabled subnet containing it.';
        END IF;
    END IF;

    -- Duplicates, in words and naming the reservation that has the value already. One query,
    -- each branch a probe of its unique index (an OR across them let the planner pick a
    -- sequential scan, which made large inserts quadratic); the subnet's name is only read for
    -- the message. The unique constraints stay the race-proof backstop for rows that
    -- concurrent transactions have not committed yet.
    IF TG_OP = 'INSERT' OR NEW.ip <> OLD.ip OR NEW.subnet_id <> OLD.subnet_id
       OR NEW.mac IS DISTINCT FROM OLD.mac OR lower(NEW.hostname) IS DISTINCT FROM lower(OLD.hostname) THEN
        SELECT d.rule, d.ip, d.mac, d.hostname INTO other
        FROM (SELECT 1 AS rule, h.ip, h.mac, h.hostname FROM ipmanager.hosts h
              WHERE h.ip = NEW.ip AND h.id <> NEW.id
              UNION ALL
              SELECT 2, h.ip, h.mac, h.hostname FROM ipmanager.hosts h
              WHERE h.subnet_id = NEW.subnet_id AND h.mac = NEW.mac AND h.id <> NEW.id
              UNION ALL
              SELECT 3, h.ip, h.mac, h.hostname FROM ipmanager.hosts h
              WHERE h.subnet_id = NEW.subnet_id AND lower(h.hostname) = lower(NEW.hostname)
                AND h.id <> NEW.id
              ORDER BY 1
              LIMIT 1) d;
        IF other.rule IS NOT NULL THEN
            RAISE EXCEPTION USING
                MESSAGE = ipmanager.host_duplicate_message(other.rule, NEW.ip, NEW.mac, NEW.hostname,
                              NEW.subnet_id, other.ip, other.mac, other.hostname),
                ERRCODE = 'unique_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                COLUMN = (ARRAY['ip', 'mac', 'hostname'])[other.rule],
                CONSTRAINT = (ARRAY['hosts_ip_unique', 'hosts_subnet_mac_unique',
                                    'hosts_subnet_hostname_unique'])[other.rule];
        END IF;
    END IF;

    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.hosts_validate() IS
    'BEFORE INSERT OR UPDATE trigger on hosts: normalises ip, fills a missing subnet_id and enforces hostname, MAC, lease time, address-in-subnet and uniqueness (IP; MAC and host name per subnet) rules with admin-readable messages.';

--------------------------------------------------------------------------------------------------
-- One MAC address grammar
--------------------------------------------------------------------------------------------------

-- The grammar of ipmanager's own entry points (CLI flags, every import format and the functions
-- here), the same as src/mac.rs with the same message: colon-separated octets of one or two hex
-- digits (52:54:00:12:34:56, and 8:0:20:1:2:3 as /etc/ethers writes them), hyphen-separated
-- octets of two digits, Cisco's dotted groups of four (5254.0012.3456) and twelve bare digits,
-- in any case; nothing else, not even surrounding spaces. A plain INSERT still takes what the
-- macaddr type takes (its input function is PostgreSQL's, see README); macaddr does not accept
-- the /etc/ethers short form, which is why functions taking a MAC take text and call this.
CREATE FUNCTION ipmanager.parse_mac(mac text)
    RETURNS macaddr
    LANGUAGE plpgsql
    IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF mac ~ '^[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2}){5}$' THEN
        RETURN array_to_string(
                   ARRAY(SELECT lpad(o.octet, 2, '0')
                         FROM unnest(string_to_array(mac, ':')) WITH ORDINALITY AS o (octet, n)
                         ORDER BY o.n),
                   '')::macaddr;
    ELSIF mac ~ '^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}$'
       OR mac ~ '^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$'
       OR mac ~ '^[0-9A-Fa-f]{12}$' THEN
        RETURN translate(mac, '-.', '')::macaddr;
    END IF;
    RAISE EXCEPTION 'hosts.mac % is not a MAC address: give six hexadecimal octets as 52:54:00:12:34:56, 52-54-00-12-34-56, 5254.0012.3456, 525400123456 or 8:0:20:1:2:3',
            quote_literal(mac)
        USING ERRCODE = 'invalid_text_representation', SCHEMA = 'ipmanager', TABLE = 'hosts',
              COLUMN = 'mac';
END
$$;

COMMENT ON FUNCTION ipmanager.parse_mac(text) IS
    'A MAC address in any notation of ipmanager''s grammar (52:54:00:12:34:56, 8:0:20:1:2:3, 52-54-00-12-34-56, 5254.0012.3456, 525400123456; any case) as macaddr; SQLSTATE 22P02 otherwise.';

-- allocate_host takes the MAC as text so that every notation of the grammar works. A call with
-- quoted literals (allocate_host('8:0:20:1:2:3', ...)) resolves to this version, since
-- PostgreSQL prefers text for untyped literals; V2's macaddr version stays for callers that pass
-- a macaddr value and now forwards to this one, so the logic exists once.
CREATE FUNCTION ipmanager.allocate_host(
        mac text,
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
    octets     macaddr;
    target     ipmanager.subnets;
    usage      record;
    addr       inet;
    result     ipmanager.hosts;
    constraint_name text;
    attempt    integer := 0;
BEGIN
    octets := ipmanager.parse_mac(allocate_host.mac);
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
            VALUES (target.id, octets, addr, allocate_host.hostname,
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

COMMENT ON FUNCTION ipmanager.allocate_host(text, text, text, interval, text, boolean) IS
    'Creates a reservation with the next free address (see next_free_address) of the subnet given by name or CIDR, for a MAC in any notation of parse_mac; concurrent callers in one subnet queue on the subnet row. Full subnet: SQLSTATE IM001.';

CREATE OR REPLACE FUNCTION ipmanager.allocate_host(
        mac macaddr,
        hostname text,
        subnet text,
        lease_time interval DEFAULT NULL,
        comment text DEFAULT NULL,
        enabled boolean DEFAULT true)
    RETURNS ipmanager.hosts
    LANGUAGE sql
AS $$
    SELECT * FROM ipmanager.allocate_host(mac::text, hostname, subnet, lease_time, comment, enabled)
$$;

COMMENT ON FUNCTION ipmanager.allocate_host(macaddr, text, text, interval, text, boolean) IS
    'allocate_host for a macaddr value: the same as the text version.';

REVOKE ALL ON FUNCTION ipmanager.allocate_host(text, text, text, interval, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.allocate_host(text, text, text, interval, text, boolean) TO ipmanager_admin;

--------------------------------------------------------------------------------------------------
-- Infinite leases
--------------------------------------------------------------------------------------------------

-- dnsmasq's `infinite` lease. interval has no infinity before PostgreSQL 17, so it is stored as
-- a sentinel: 4294967295 seconds (2^32 - 1, what DHCPv4 and Kea send for an infinite lease, and
-- far beyond the 10-year bound of finite leases, so no finite lease can be mistaken for it). The
-- triggers store every spelling of it in this one form (e.g. '4294967295 seconds', or
-- 'infinity' on PostgreSQL 17), and the agent renders it as `infinite`.
CREATE FUNCTION ipmanager.infinite_lease()
    RETURNS interval
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT interval '4294967295 seconds'
$$;

COMMENT ON FUNCTION ipmanager.infinite_lease() IS
    'The lease_time that stands for an infinite lease (4294967295 seconds): SET lease_time = ipmanager.infinite_lease().';

-- As V1's, plus the sentinel.
CREATE OR REPLACE FUNCTION ipmanager.is_valid_lease_time(lease interval)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT lease IS NULL
        OR extract(epoch FROM lease) = 4294967295
        OR (extract(epoch FROM lease) BETWEEN 120 AND extract(epoch FROM interval '10 years')
            AND extract(epoch FROM lease) = trunc(extract(epoch FROM lease)))
$$;

COMMENT ON FUNCTION ipmanager.is_valid_lease_time(interval) IS
    'True for NULL (use the default), a whole number of seconds between 2 minutes and 10 years, or infinite_lease().';

-- The one form of the infinite lease: 'infinity' (PostgreSQL 17 and later; isfinite() is true
-- for every interval before) and any interval of 4294967295 seconds become infinite_lease().
-- Anything else is returned unchanged for is_valid_lease_time to judge.
CREATE FUNCTION ipmanager.normalise_lease_time(lease interval)
    RETURNS interval
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN NOT isfinite(lease) AND lease > interval '0' THEN ipmanager.infinite_lease()
        WHEN isfinite(lease) AND extract(epoch FROM lease) = 4294967295 THEN ipmanager.infinite_lease()
        ELSE lease
    END
$$;

COMMENT ON FUNCTION ipmanager.normalise_lease_time(interval) IS
    'infinite_lease() for any spelling of an infinite lease (''infinity'' on PostgreSQL 17, 4294967295 seconds in any units), else the argument.';

COMMENT ON COLUMN ipmanager.subnets.lease_time IS
    'DHCP lease time: NULL for dnsmasq''s default, a whole number of seconds between 2 minutes and 10 years, or infinite: ipmanager.infinite_lease() (4294967295 seconds, since interval has no infinity before PostgreSQL 17; rendered as dnsmasq''s `infinite`).';
COMMENT ON COLUMN ipmanager.hosts.lease_time IS
    'Per-host lease time override: NULL for the subnet''s, a whole number of seconds between 2 minutes and 10 years, or infinite: ipmanager.infinite_lease() (4294967295 seconds, since interval has no infinity before PostgreSQL 17; rendered as dnsmasq''s `infinite`).';
