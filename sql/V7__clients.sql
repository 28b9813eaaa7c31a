-- ipmanager client identifiers and several MACs per reservation (issue 13): match clients the way
-- they identify themselves. A DHCPv6 client is known by its DUID, a DHCPv4 client may send a
-- client-id, and a laptop asks from its wired and its wireless interface for the same address.
--
-- How this file is applied: like the earlier files (refinery in one transaction, or by hand with
-- psql -v ON_ERROR_STOP=1 -f ... after V1-V6), so no psql meta-commands, no BEGIN/COMMIT, every
-- object schema-qualified, PostgreSQL 13 or later. V1-V6 are released and never edited; what
-- changes here is redefined with CREATE OR REPLACE or added as objects of its own.
--
-- The model
--   * hosts.client_id: the DHCPv4 client identifier (option 61) or the DHCPv6 DUID the client
--     sends, as hex octets separated by colons (01:52:54:00:12:34:56, 00:01:00:01:2c:...).
--     Optional. Written in any accepted notation (octets of one or two hex digits separated by
--     ':' or bare hex digits), stored lowercase with two digits an octet. 2 to 130 octets (a DUID
--     is at most 130). Unique per subnet. Only a reservation (a host with a MAC) has one.
--     Rendered as dnsmasq's `id:` field: dnsmasq matches a client by its client-id/DUID before
--     it looks at MACs, so a client that changes its MAC keeps its reservation by identifier.
--   * ipmanager.host_macs: more MAC addresses of a reservation, besides hosts.mac (which stays
--     the primary MAC, so that every reader of V1-V6 keeps working). Rendered in the same
--     dhcp-host line (`dhcp-host=MAC1,MAC2,IP,name`): whichever interface asks gets the address,
--     one at a time. At most 8 per host.
--   * The uniqueness rule for MACs becomes: a MAC belongs to at most one reservation per subnet,
--     whether as its hosts.mac or in host_macs.
--
-- For psql users (the CLI does the same)
--   UPDATE ipmanager.hosts SET client_id = '00:01:00:01:2c:5e:11:22:52:54:00:12:34:56'
--       WHERE hostname = 'laptop';
--   INSERT INTO ipmanager.host_macs (host_id, mac)
--       SELECT id, ipmanager.parse_mac('52:54:00:aa:bb:cc') FROM ipmanager.hosts WHERE hostname = 'laptop';
--   DELETE FROM ipmanager.host_macs WHERE mac = '52:54:00:aa:bb:cc';
--
-- SQLSTATEs raised here
--   23514 check_violation        a client_id that is not hex octets; a client_id or extra MAC on a
--                                DNS-only name; a group or all-zero extra MAC; more than 8
--   23505 unique_violation       a client_id or MAC already used by a reservation of the subnet
--   23503 foreign_key_violation  host_macs.host_id of a host that does not exist

--------------------------------------------------------------------------------------------------
-- Client identifiers
--------------------------------------------------------------------------------------------------

-- The one client-id grammar, the same as src/client_id.rs: octets of one or two hex digits
-- separated by ':', or bare hex digits in pairs; 2 to 130 octets. NULL when the text is none.
CREATE FUNCTION ipmanager.normalise_client_id(client_id text)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN octets IS NULL OR cardinality(octets) NOT BETWEEN 2 AND 130 THEN NULL
        ELSE array_to_string(octets, ':')
    END
    FROM (SELECT CASE
              WHEN client_id ~ '^[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2})+$' THEN
                  ARRAY(SELECT lower(lpad(o.octet, 2, '0'))
                        FROM unnest(string_to_array(client_id, ':')) WITH ORDINALITY AS o (octet, n)
                        ORDER BY o.n)
              WHEN client_id ~ '^([0-9A-Fa-f]{2})+$' THEN
                  ARRAY(SELECT lower(m[1]) FROM regexp_matches(client_id, '..', 'g') AS m)
          END AS octets) parsed
$$;

COMMENT ON FUNCTION ipmanager.normalise_client_id(text) IS
    'A client identifier (DHCPv4 client-id or DHCPv6 DUID) in the stored form: lowercase hex octets separated by colons; NULL when the text is not 2 to 130 octets of one or two hex digits separated by colons, or bare pairs of hex digits.';

ALTER TABLE ipmanager.hosts ADD COLUMN client_id text;

-- Partial: the agent reads the few hosts with a client identifier on every snapshot; the unique
-- index is the race-proof backstop of the rule hosts_validate states in words.
CREATE UNIQUE INDEX hosts_subnet_client_id_unique ON ipmanager.hosts (subnet_id, client_id)
    WHERE client_id IS NOT NULL;

COMMENT ON COLUMN ipmanager.hosts.client_id IS
    'DHCPv4 client identifier (option 61) or DHCPv6 DUID of the client, as lowercase hex octets separated by colons; NULL: matched by MAC only. Unique per subnet; only for reservations (hosts with a MAC). dnsmasq matches it before the MACs.';

--------------------------------------------------------------------------------------------------
-- More MACs of a reservation
--------------------------------------------------------------------------------------------------

-- subnet_id is the host's, kept equal by the foreign key's ON UPDATE CASCADE, so that one unique
-- index holds "a MAC at most once per subnet" among extra MACs; the rule between host_macs and
-- hosts.mac spans two tables and is kept by the triggers (hosts_validate, host_macs_validate).
CREATE TABLE ipmanager.host_macs (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id    bigint      NOT NULL,
    subnet_id  bigint      NOT NULL,
    mac        macaddr     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT host_macs_host_fkey FOREIGN KEY (host_id, subnet_id)
        REFERENCES ipmanager.hosts (id, subnet_id) ON UPDATE CASCADE ON DELETE CASCADE
);

CREATE UNIQUE INDEX host_macs_subnet_mac_unique ON ipmanager.host_macs (subnet_id, mac);
CREATE INDEX host_macs_host ON ipmanager.host_macs (host_id);

COMMENT ON TABLE ipmanager.host_macs IS
    'More MAC addresses of a reservation besides hosts.mac (a laptop''s wired and wireless interfaces): all are written in the host''s one dhcp-host line, and whichever asks gets the address.';
COMMENT ON COLUMN ipmanager.host_macs.id IS 'Surrogate key.';
COMMENT ON COLUMN ipmanager.host_macs.host_id IS 'The reservation (hosts.id) the MAC belongs to; removing the host removes its MACs.';
COMMENT ON COLUMN ipmanager.host_macs.subnet_id IS
    'The host''s subnet, filled in and kept up to date from the host (leave it out).';
COMMENT ON COLUMN ipmanager.host_macs.mac IS
    'A unicast, not all-zero MAC address; at most one reservation per subnet has it (as hosts.mac or here).';
COMMENT ON COLUMN ipmanager.host_macs.created_at IS 'When the row was inserted.';
COMMENT ON COLUMN ipmanager.host_macs.updated_at IS 'When the row was last updated (maintained by a trigger).';

CREATE TRIGGER host_macs_touch_updated_at
    BEFORE UPDATE ON ipmanager.host_macs
    FOR EACH ROW EXECUTE FUNCTION ipmanager.touch_updated_at();

-- The same lock as host_aliases' (see V6): a MAC written here and a hosts.mac written at the same
-- time are compared without races.
CREATE TRIGGER host_macs_lock_hosts
    BEFORE INSERT OR UPDATE OF mac ON ipmanager.host_macs
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.lock_hosts_for_aliases();

CREATE FUNCTION ipmanager.host_macs_validate()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    owner record;
    other record;
BEGIN
    SELECT h.id, h.hostname, h.subnet_id, h.mac, h.ip INTO owner
    FROM ipmanager.hosts h WHERE h.id = NEW.host_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'host_macs.host_id % does not exist: a MAC belongs to an existing reservation',
                coalesce(NEW.host_id::text, 'NULL')
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = 'host_macs',
                  COLUMN = 'host_id', CONSTRAINT = 'host_macs_host_fkey';
    END IF;
    NEW.subnet_id := owner.subnet_id;
    IF owner.mac IS NULL THEN
        RAISE EXCEPTION 'host_macs.mac % cannot be added to DNS-only name %: give the host its primary MAC (hosts.mac) first',
                NEW.mac, quote_literal(owner.hostname)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'host_macs',
                  COLUMN = 'host_id', CONSTRAINT = 'host_macs_reservation';
    END IF;
    IF NEW.mac = '00:00:00:00:00:00'::macaddr THEN
        RAISE EXCEPTION 'host_macs.mac % is the all-zero address: a DHCP reservation needs the unicast MAC address of a real interface',
                NEW.mac
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'host_macs',
                  COLUMN = 'mac', CONSTRAINT = 'host_macs_mac_unicast';
    ELSIF (NEW.mac & '01:00:00:00:00:00'::macaddr) <> '00:00:00:00:00:00'::macaddr THEN
        RAISE EXCEPTION 'host_macs.mac % is a % address (lowest bit of the first octet set): a DHCP reservation needs the unicast MAC address of a real interface',
                NEW.mac,
                CASE WHEN NEW.mac = 'ff:ff:ff:ff:ff:ff'::macaddr THEN 'broadcast' ELSE 'multicast' END
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'host_macs',
                  COLUMN = 'mac', CONSTRAINT = 'host_macs_mac_unicast';
    END IF;

    SELECT d.hostname, d.ip INTO other
    FROM (SELECT h.hostname, h.ip FROM ipmanager.hosts h
          WHERE h.subnet_id = NEW.subnet_id AND h.mac = NEW.mac
          UNION ALL
          SELECT h.hostname, h.ip FROM ipmanager.host_macs m JOIN ipmanager.hosts h ON h.id = m.host_id
          WHERE m.subnet_id = NEW.subnet_id AND m.mac = NEW.mac AND m.id <> NEW.id
          LIMIT 1) d;
    IF FOUND THEN
        RAISE EXCEPTION 'host_macs.mac % already has a reservation in subnet % (%, %): a MAC address has at most one reservation per subnet',
                NEW.mac, quote_literal((SELECT s.name FROM ipmanager.subnets s WHERE s.id = NEW.subnet_id)),
                quote_literal(other.hostname), host(other.ip)
            USING ERRCODE = 'unique_violation', SCHEMA = 'ipmanager', TABLE = 'host_macs',
                  COLUMN = 'mac', CONSTRAINT = 'host_macs_subnet_mac_unique';
    END IF;

    -- Bounds the dhcp-host line well below dnsmasq's 1,024-byte chunk (9 MACs, a 130-octet
    -- client-id, an address, a 253-byte name and a lease time stay under 900 bytes).
    IF TG_OP = 'INSERT' AND (SELECT count(*) FROM ipmanager.host_macs m WHERE m.host_id = NEW.host_id) >= 8 THEN
        RAISE EXCEPTION 'host_macs.mac %: host % has 8 extra MACs already, the most a reservation may have',
                NEW.mac, quote_literal(owner.hostname)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'host_macs',
                  COLUMN = 'mac', CONSTRAINT = 'host_macs_at_most_8';
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.host_macs_validate() IS
    'BEFORE INSERT OR UPDATE trigger on host_macs: fills subnet_id from the host, refuses DNS-only hosts, group and all-zero MACs, a MAC another reservation of the subnet has (as hosts.mac or here), and a ninth extra MAC.';

CREATE TRIGGER host_macs_validate
    BEFORE INSERT OR UPDATE ON ipmanager.host_macs
    FOR EACH ROW EXECUTE FUNCTION ipmanager.host_macs_validate();

-- The duplicate words of V6, with rule 4: a client identifier.
CREATE OR REPLACE FUNCTION ipmanager.host_duplicate_message(rule int, ip inet, mac macaddr, hostname text,
                                                            subnet_id bigint, other_ip inet,
                                                            other_mac macaddr, other_hostname text)
    RETURNS text
    LANGUAGE sql
    STABLE
AS $$
    SELECT CASE rule
        WHEN 1 THEN format('hosts.ip %s is already reserved (for %s, %s): an IP address can have only one reservation',
                           host(ip), quote_literal(other_hostname), coalesce(other_mac::text, 'DNS only'))
        WHEN 2 THEN format('hosts.mac %s already has a reservation in subnet %s (%s, %s): a MAC address has at most one reservation per subnet',
                           mac, quote_literal((SELECT s.name FROM ipmanager.subnets s WHERE s.id = subnet_id)),
                           quote_literal(other_hostname), host(other_ip))
        WHEN 3 THEN format('hosts.hostname %s is already used in subnet %s (%s, %s): host names are unique per subnet, ignoring case',
                           quote_literal(hostname), quote_literal((SELECT s.name FROM ipmanager.subnets s WHERE s.id = subnet_id)),
                           coalesce(other_mac::text, 'DNS only'), host(other_ip))
        WHEN 4 THEN format('hosts.client_id is already used in subnet %s (%s, %s): a client identifier has at most one reservation per subnet',
                           quote_literal((SELECT s.name FROM ipmanager.subnets s WHERE s.id = subnet_id)),
                           quote_literal(other_hostname), host(other_ip))
    END
$$;

-- V6's hosts_validate with the client identifier's rules and the MAC rule across hosts.mac and
-- host_macs. In this one function rather than a trigger of its own, for the reason V6 gives.
CREATE OR REPLACE FUNCTION ipmanager.hosts_validate()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    subnet record;
    other  record;
    net    record;
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

    -- V7: the client identifier, normalised; only a reservation has one.
    IF NEW.client_id IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.client_id IS DISTINCT FROM OLD.client_id) THEN
        IF ipmanager.normalise_client_id(NEW.client_id) IS NULL THEN
            RAISE EXCEPTION 'hosts.client_id % is not a client identifier: give 2 to 130 hexadecimal octets separated by colons (01:52:54:00:12:34:56, 00:01:00:01:2c:5e:11:22:52:54:00:12:34:56) or as bare hex digits',
                    quote_literal(NEW.client_id)
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'client_id', CONSTRAINT = 'hosts_client_id_valid';
        END IF;
        NEW.client_id := ipmanager.normalise_client_id(NEW.client_id);
    END IF;
    IF NEW.mac IS NULL AND (NEW.client_id IS NOT NULL
                            OR (TG_OP = 'UPDATE' AND OLD.mac IS NOT NULL
                                AND EXISTS (SELECT 1 FROM ipmanager.host_macs m WHERE m.host_id = NEW.id))) THEN
        RAISE EXCEPTION 'hosts.mac of % is NULL but the host has a client identifier or more MACs: a DNS-only name has neither, a reservation needs its primary MAC',
                quote_literal(NEW.hostname)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                  COLUMN = 'mac', CONSTRAINT = 'hosts_client_id_needs_mac';
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

    -- V6: a host name must not be an alias of the subnet (host_aliases_subnet_name_unique
    -- covers aliases among themselves; this and host_aliases_validate the two tables), nor one
    -- of the host's own aliases.
    IF TG_OP = 'INSERT' OR lower(NEW.hostname) IS DISTINCT FROM lower(OLD.hostname)
       OR NEW.subnet_id IS DISTINCT FROM OLD.subnet_id THEN
        SELECT a.name, a.host_id, h.hostname, h.mac, h.ip INTO other
        FROM ipmanager.host_aliases a JOIN ipmanager.hosts h ON h.id = a.host_id
        WHERE a.subnet_id = NEW.subnet_id AND lower(a.name) = lower(NEW.hostname);
        IF FOUND AND other.host_id = NEW.id THEN
            RAISE EXCEPTION 'hosts.hostname % is already an alias of this host: remove the alias first',
                    quote_literal(NEW.hostname)
                USING ERRCODE = 'unique_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'hostname', CONSTRAINT = 'host_aliases_subnet_name_unique';
        ELSIF FOUND THEN
            RAISE EXCEPTION 'hosts.hostname % is already used in subnet % (alias of %, %, %): host names and aliases are unique per subnet, ignoring case',
                    quote_literal(NEW.hostname),
                    quote_literal((SELECT s.name FROM ipmanager.subnets s WHERE s.id = NEW.subnet_id)),
                    quote_literal(other.hostname), coalesce(other.mac::text, 'DNS only'), host(other.ip)
                USING ERRCODE = 'unique_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'hostname', CONSTRAINT = 'host_aliases_subnet_name_unique';
        END IF;
    END IF;

    -- V6: the profile must exist (hosts_profile_id_fkey is the backstop).
    IF NEW.profile_id IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.profile_id IS DISTINCT FROM OLD.profile_id)
       AND NOT EXISTS (SELECT 1 FROM ipmanager.profiles p WHERE p.id = NEW.profile_id) THEN
        RAISE EXCEPTION 'hosts.profile_id % of host % does not exist: a host can only use an existing profile',
                NEW.profile_id, quote_literal(NEW.hostname)
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                  COLUMN = 'profile_id', CONSTRAINT = 'hosts_profile_id_fkey',
                  HINT = 'Create it first with ipmanager profile add NAME, and refer to it with ipmanager.profile_id(NAME).';
    END IF;

    -- V6: a DNS-only name (no MAC) must lie outside the dynamic range, where dnsmasq would hand
    -- its address to a client.
    IF NEW.mac IS NULL AND (TG_OP = 'INSERT' OR OLD.mac IS NOT NULL OR NEW.ip <> OLD.ip
                            OR NEW.subnet_id <> OLD.subnet_id) THEN
        SELECT s.name, s.range_start, s.range_end INTO net
        FROM ipmanager.subnets s WHERE s.id = NEW.subnet_id;
        IF NEW.ip BETWEEN net.range_start AND net.range_end THEN
            RAISE EXCEPTION 'hosts.ip % of DNS-only name % lies in the dynamic range %-% of subnet %: dnsmasq would lease it to a client, so a name without MAC must have an address outside the range',
                    host(NEW.ip), quote_literal(NEW.hostname), host(net.range_start),
                    host(net.range_end), quote_literal(net.name)
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                      COLUMN = 'ip', CONSTRAINT = 'hosts_dns_only_outside_range',
                      HINT = 'Give an address outside the range, or give the host a MAC address (--mac, hosts.mac) to make it a reservation.';
        END IF;
    END IF;

    -- Duplicates, in words and naming the reservation that has the value already. One query,
    -- each branch a probe of its unique index (an OR across them let the planner pick a
    -- sequential scan, which made large inserts quadratic); the subnet's name is only read for
    -- the message. The unique constraints stay the race-proof backstop for rows that
    -- concurrent transactions have not committed yet.
    IF TG_OP = 'INSERT' OR NEW.ip <> OLD.ip OR NEW.subnet_id <> OLD.subnet_id
       OR NEW.mac IS DISTINCT FROM OLD.mac OR NEW.client_id IS DISTINCT FROM OLD.client_id
       OR lower(NEW.hostname) IS DISTINCT FROM lower(OLD.hostname) THEN
        SELECT d.rule, d.ip, d.mac, d.hostname INTO other
        FROM (SELECT 1 AS rule, h.ip, h.mac, h.hostname FROM ipmanager.hosts h
              WHERE h.ip = NEW.ip AND h.id <> NEW.id
              UNION ALL
              SELECT 2, h.ip, h.mac, h.hostname FROM ipmanager.hosts h
              WHERE h.subnet_id = NEW.subnet_id AND h.mac = NEW.mac AND h.id <> NEW.id
              UNION ALL
              SELECT 2, h.ip, h.mac, h.hostname
              FROM ipmanager.host_macs m JOIN ipmanager.hosts h ON h.id = m.host_id
              WHERE m.subnet_id = NEW.subnet_id AND m.mac = NEW.mac AND m.host_id <> NEW.id
              UNION ALL
              SELECT 3, h.ip, h.mac, h.hostname FROM ipmanager.hosts h
              WHERE h.subnet_id = NEW.subnet_id AND lower(h.hostname) = lower(NEW.hostname)
                AND h.id <> NEW.id
              UNION ALL
              SELECT 4, h.ip, h.mac, h.hostname FROM ipmanager.hosts h
              WHERE h.subnet_id = NEW.subnet_id AND h.client_id = NEW.client_id AND h.id <> NEW.id
              ORDER BY 1
              LIMIT 1) d;
        IF other.rule IS NOT NULL THEN
            RAISE EXCEPTION USING
                MESSAGE = ipmanager.host_duplicate_message(other.rule, NEW.ip, NEW.mac, NEW.hostname,
                              NEW.subnet_id, other.ip, other.mac, other.hostname),
                ERRCODE = 'unique_violation', SCHEMA = 'ipmanager', TABLE = 'hosts',
                COLUMN = (ARRAY['ip', 'mac', 'hostname', 'client_id'])[other.rule],
                CONSTRAINT = (ARRAY['hosts_ip_unique', 'hosts_subnet_mac_unique',
                                    'hosts_subnet_hostname_unique',
                                    'hosts_subnet_client_id_unique'])[other.rule];
        END IF;
    END IF;

    RETURN NEW;
END
$$;


COMMENT ON FUNCTION ipmanager.hosts_validate() IS
    'BEFORE INSERT OR UPDATE trigger on hosts: normalises ip and client_id, fills a missing subnet_id and enforces hostname, MAC, client identifier, lease time, address-in-subnet, uniqueness (IP; MAC across hosts.mac and host_macs, client identifier and host name per subnet, host names against aliases), profile and DNS-only-outside-the-range rules with admin-readable messages.';

--------------------------------------------------------------------------------------------------
-- Audit and notification, as for host_aliases (V6)
--------------------------------------------------------------------------------------------------

ALTER TABLE ipmanager.audit_log DROP CONSTRAINT audit_log_table_name_valid;
ALTER TABLE ipmanager.audit_log ADD CONSTRAINT audit_log_table_name_valid
    CHECK (table_name IN ('hosts', 'subnets', 'sites', 'profiles', 'subnet_options',
                          'profile_options', 'host_aliases', 'host_macs'));
COMMENT ON COLUMN ipmanager.audit_log.table_name IS
    '''hosts'', ''subnets'', ''sites'', ''profiles'', ''subnet_options'', ''profile_options'', ''host_aliases'' or ''host_macs''.';

-- Only statements not run by a trigger (a host's removal or move cascades here): see V6.
DO $$
DECLARE
    t    text := 'host_macs';
    cond text := 'WHEN (pg_trigger_depth() < 1)';
BEGIN
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON ipmanager.%I REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT %s EXECUTE FUNCTION ipmanager.audit_change()', t || '_audit_insert', t, cond);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON ipmanager.%I REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT %s EXECUTE FUNCTION ipmanager.audit_change()', t || '_audit_update', t, cond);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON ipmanager.%I REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT %s EXECUTE FUNCTION ipmanager.audit_change()', t || '_audit_delete', t, cond);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON ipmanager.%I
                        FOR EACH STATEMENT %s EXECUTE FUNCTION ipmanager.audit_change()', t || '_audit_truncate', t, cond);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ipmanager.%I
                        FOR EACH STATEMENT %s EXECUTE FUNCTION ipmanager.notify_change()', t || '_notify_change', t, cond);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON ipmanager.%I REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT %s EXECUTE FUNCTION ipmanager.notify_site_change()', t || '_notify_sites_insert', t, cond);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON ipmanager.%I REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT %s EXECUTE FUNCTION ipmanager.notify_site_change()', t || '_notify_sites_update', t, cond);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON ipmanager.%I REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT %s EXECUTE FUNCTION ipmanager.notify_site_change()', t || '_notify_sites_delete', t, cond);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON ipmanager.%I
                        FOR EACH STATEMENT %s EXECUTE FUNCTION ipmanager.notify_site_change()', t || '_notify_sites_truncate', t, cond);
END
$$;

-- As V6's, with host_macs among the tables whose rows name a subnet.
CREATE OR REPLACE FUNCTION ipmanager.notify_site_change()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    touched text[] := '{}';
    payload text;
BEGIN
    IF TG_OP = 'TRUNCATE' OR TG_TABLE_NAME IN ('profiles', 'profile_options') THEN
        PERFORM pg_notify('ipmanager_site_changes', TG_TABLE_NAME);
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF TG_TABLE_NAME IN ('hosts', 'subnet_options', 'host_aliases', 'host_macs') THEN
            touched := touched || ARRAY(SELECT s.site FROM ipmanager.subnets s
                                        WHERE s.id IN (SELECT n.subnet_id FROM new_rows n));
        ELSIF TG_TABLE_NAME = 'subnets' THEN
            touched := touched || ARRAY(SELECT DISTINCT n.site FROM new_rows n);
        ELSE
            touched := touched || ARRAY(SELECT n.name FROM new_rows n);
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF TG_TABLE_NAME IN ('hosts', 'subnet_options', 'host_aliases', 'host_macs') THEN
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
    'Statement-level AFTER trigger on hosts, subnets, sites, subnet_options, host_aliases, host_macs (''table:site site ...'', ''-'': no site) and profiles, profile_options (bare table name: every agent): NOTIFY ipmanager_site_changes.';

-- As V4's, for the new tables.
CREATE OR REPLACE FUNCTION ipmanager.audit_sites(table_name text, old jsonb, new jsonb)
    RETURNS text[]
    LANGUAGE sql
    STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN audit_sites.table_name = 'subnets' THEN ARRAY(
            SELECT r ->> 'site' FROM (VALUES (audit_sites.old), (audit_sites.new)) v(r)
            WHERE r IS NOT NULL)
        WHEN audit_sites.table_name = 'sites' THEN ARRAY(
            SELECT r ->> 'name' FROM (VALUES (audit_sites.old), (audit_sites.new)) v(r)
            WHERE r IS NOT NULL)
        WHEN audit_sites.table_name IN ('hosts', 'subnet_options', 'host_aliases', 'host_macs') THEN ARRAY(
            SELECT s.site FROM ipmanager.subnets s
            WHERE s.id IN (SELECT (r ->> 'subnet_id')::bigint
                           FROM (VALUES (audit_sites.old), (audit_sites.new)) v(r)
                           WHERE r IS NOT NULL))
    END
$$;

COMMENT ON FUNCTION ipmanager.audit_sites(text, jsonb, jsonb) IS
    'The sites an audit_log row touches (NULL element: a subnet without site); NULL for profiles and their options, which concern every agent.';

--------------------------------------------------------------------------------------------------
-- Privileges, as for host_aliases
--------------------------------------------------------------------------------------------------

GRANT SELECT ON ipmanager.host_macs TO ipmanager_agent, ipmanager_admin;
GRANT INSERT, UPDATE, DELETE ON ipmanager.host_macs TO ipmanager_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA ipmanager TO ipmanager_admin;
