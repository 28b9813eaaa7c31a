-- ipmanager DHCP options, PXE boot profiles and DNS names beyond one per host (issue 12): what
-- every real network configures in dnsmasq, kept in the database with the same safety as hosts
-- and subnets.
--
-- How this file is applied: like the earlier files (refinery in one transaction, or by hand with
-- psql -v ON_ERROR_STOP=1 -f ... after V1-V5), so no psql meta-commands, no BEGIN/COMMIT, every
-- object schema-qualified, PostgreSQL 13 or later. V1-V5 are released and never edited; what
-- changes here is redefined with CREATE OR REPLACE or added as triggers of its own.
--
-- The model
--   * ipmanager.dhcp_options: the catalogue of options ipmanager knows by name (dnsmasq's names,
--     `dnsmasq --help dhcp` / `--help dhcp6`), with their number, family and value type. Read
--     only; it is filled here.
--   * ipmanager.subnet_options / ipmanager.profile_options: one row per option of a subnet or a
--     profile: the option (a catalogue name, or a number), its type (from the catalogue; declared
--     for numbers the catalogue does not know) and its value as text. A trigger resolves the
--     option, fills number and type, and checks and normalises the value (e.g. '10.0.0.53, 10.0.0.54'
--     becomes '10.0.0.53,10.0.0.54'). Subnet options are of the subnet's family (DHCPv4 or
--     DHCPv6); profile options are DHCPv4 options, like PXE boot itself.
--   * ipmanager.profiles: named option sets plus PXE boot settings (boot file per client
--     architecture, iPXE chain-loading file, next server, TFTP server name). hosts.profile_id
--     puts a host in a profile; subnets.default_profile_id is the profile of the subnet's hosts
--     that name none. A profile in use cannot be removed.
--   * ipmanager.host_aliases: extra DNS names of a host (A/AAAA only; the PTR stays the host's
--     own name). Unique ignoring case together with the host names of the same subnet, the rule
--     host names follow among themselves.
--   * hosts.mac may now be NULL: such a host is a DNS-only name (an address with a name, served
--     in DNS only, never in DHCP). Its address stays reserved (hosts_ip_unique) and may not lie
--     in its subnet's dynamic range, where dnsmasq would hand it to a client.
--
-- Value types (dhcp_options.type, subnet_options.type, profile_options.type) and their rules
--   ipv4-list         IPv4 addresses separated by commas: 10.1.0.53,10.1.0.54 (DHCPv4 only)
--   ipv6-list         IPv6 addresses separated by commas: 2001:db8::53 (DHCPv6 only)
--   domain-list       domain names separated by commas: office.example,example.com
--   string            printable ASCII without '"', '\', '#' or ',', no blank at either end;
--                     surrounding double quotes are taken off: "http://wpad/wpad.dat"
--   uint8/16/32       a decimal number that fits the width
--   bool              true/false, yes/no, on/off or 1/0, stored as 1 or 0
--   hex               bytes as hex digits, with or without ':' between them: de:ad:be:ef
--   classless-routes  network/prefix,router pairs: 10.2.0.0/16,10.1.0.1,0.0.0.0/0,10.1.0.1
--                     (DHCPv4 only; RFC 3442 clients ignore the router option when they get
--                     this one, so include the default route, as dnsmasq's manual says)
--   Every value is at most 500 bytes (string 255), so no rendered line reaches dnsmasq's
--   1,024-byte chunk, and no value can contain a newline, '#', a quote or (outside lists) a
--   comma: nothing an admin types can add a field, an option or a line to dnsmasq's files.
--
-- For psql users (the CLI does the same)
--   SELECT ipmanager.set_subnet_option('office', 'dns-server', '10.1.0.53,10.1.0.54');
--   SELECT ipmanager.set_subnet_option('office', '252', '"http://wpad/wpad.dat"'); -- quoted: string
--   SELECT ipmanager.set_subnet_option('office', '224', 'de:ad', 'hex');            -- declared type
--   SELECT ipmanager.unset_subnet_option('office', 'dns-server');
--   SELECT ipmanager.set_profile_option('pxe', 'tftp-server-address', '10.1.0.5');
--   SELECT ipmanager.unset_profile_option('pxe', 'tftp-server-address');
--   INSERT INTO ipmanager.profiles (name, boot_file, boot_file_uefi, next_server)
--       VALUES ('pxe', 'pxelinux.0', 'grubx64.efi', '10.1.0.5');
--   UPDATE ipmanager.hosts SET profile_id = ipmanager.profile_id('pxe') WHERE hostname = 'pc1';
--   UPDATE ipmanager.subnets SET default_profile_id = ipmanager.profile_id('pxe') WHERE name = 'lab';
--   INSERT INTO ipmanager.host_aliases (host_id, name)
--       SELECT id, 'laser' FROM ipmanager.hosts WHERE hostname = 'printer';
--   INSERT INTO ipmanager.hosts (ip, hostname) VALUES ('10.1.0.60', 'vip1');   -- DNS-only name
--   SELECT ipmanager.allocate_host(NULL, 'vip2', 'office');                     -- the same, allocated
--
-- SQLSTATEs raised here
--   23514 check_violation        an option, value, profile field or alias breaks its rule
--   23505 unique_violation       an option set twice on one owner; a profile name taken; an alias
--                                equal to a host name or alias of the same subnet
--   23503 foreign_key_violation  a profile or host that does not exist; a profile still in use
--   P0002 no_data_found          profile_id(), set_profile_option(): no profile of that name

--------------------------------------------------------------------------------------------------
-- The option catalogue
--------------------------------------------------------------------------------------------------

CREATE TABLE ipmanager.dhcp_options (
    family  smallint NOT NULL CONSTRAINT dhcp_options_family_valid CHECK (family IN (4, 6)),
    number  integer  NOT NULL,
    name    text     NOT NULL,
    type    text     NOT NULL,
    comment text,
    CONSTRAINT dhcp_options_pkey PRIMARY KEY (family, number),
    CONSTRAINT dhcp_options_name_unique UNIQUE (family, name)
);

COMMENT ON TABLE ipmanager.dhcp_options IS
    'The DHCP options ipmanager knows by name (dnsmasq''s names) with their value type; options by number that are not listed need a declared type. Filled by the migration; read only.';
COMMENT ON COLUMN ipmanager.dhcp_options.family IS '4: DHCPv4 option, 6: DHCPv6 option.';
COMMENT ON COLUMN ipmanager.dhcp_options.number IS 'The option code.';
COMMENT ON COLUMN ipmanager.dhcp_options.name IS 'dnsmasq''s name of the option (dnsmasq --help dhcp, --help dhcp6).';
COMMENT ON COLUMN ipmanager.dhcp_options.type IS
    'Value type: ipv4-list, ipv6-list, domain-list, string, uint8, uint16, uint32, bool, hex or classless-routes.';
COMMENT ON COLUMN ipmanager.dhcp_options.comment IS 'What the option is for.';

INSERT INTO ipmanager.dhcp_options (family, number, name, type, comment) VALUES
    (4,   1, 'netmask',                  'ipv4-list',        'subnet mask (from the subnet''s CIDR; not settable)'),
    (4,   3, 'router',                   'ipv4-list',        'default routers (the subnet''s gateway; not settable)'),
    (4,   6, 'dns-server',               'ipv4-list',        'DNS servers (RFC 2132 3.8)'),
    (4,   7, 'log-server',               'ipv4-list',        'MIT-LCS UDP log servers'),
    (4,   9, 'lpr-server',               'ipv4-list',        'line printer servers'),
    (4,  13, 'boot-file-size',           'uint16',           'boot file size in 512-byte blocks'),
    (4,  15, 'domain-name',              'string',           'domain name (the subnet''s domain; not settable)'),
    (4,  16, 'swap-server',              'ipv4-list',        'swap server'),
    (4,  17, 'root-path',                'string',           'path of the client''s root disk'),
    (4,  18, 'extension-path',           'string',           'file with further options'),
    (4,  19, 'ip-forward-enable',        'bool',             'IP forwarding on the client'),
    (4,  20, 'non-local-source-routing', 'bool',             'non-local source routing'),
    (4,  21, 'policy-filter',            'ipv4-list',        'address/mask pairs for source routing'),
    (4,  22, 'max-datagram-reassembly',  'uint16',           'largest datagram to reassemble'),
    (4,  23, 'default-ttl',              'uint8',            'default IP time-to-live'),
    (4,  26, 'mtu',                      'uint16',           'interface MTU'),
    (4,  27, 'all-subnets-local',        'bool',             'all subnets share the MTU'),
    (4,  31, 'router-discovery',         'bool',             'perform router discovery'),
    (4,  32, 'router-solicitation',      'ipv4-list',        'router solicitation address'),
    (4,  33, 'static-route',             'ipv4-list',        'classful destination/router pairs (obsolete; see 121)'),
    (4,  34, 'trailer-encapsulation',    'bool',             'ARP trailers'),
    (4,  35, 'arp-timeout',              'uint32',           'ARP cache timeout in seconds'),
    (4,  36, 'ethernet-encap',           'bool',             'IEEE 802.3 encapsulation'),
    (4,  37, 'tcp-ttl',                  'uint8',            'TCP default time-to-live'),
    (4,  38, 'tcp-keepalive',            'uint32',           'TCP keepalive interval in seconds'),
    (4,  40, 'nis-domain',               'string',           'NIS domain'),
    (4,  41, 'nis-server',               'ipv4-list',        'NIS servers'),
    (4,  42, 'ntp-server',               'ipv4-list',        'NTP servers (RFC 2132 8.3)'),
    (4,  44, 'netbios-ns',               'ipv4-list',        'NetBIOS name servers (WINS)'),
    (4,  45, 'netbios-dd',               'ipv4-list',        'NetBIOS datagram distribution servers'),
    (4,  46, 'netbios-nodetype',         'uint8',            'NetBIOS node type: 1 B, 2 P, 4 M, 8 H'),
    (4,  47, 'netbios-scope',            'string',           'NetBIOS scope'),
    (4,  48, 'x-windows-fs',             'ipv4-list',        'X Window font servers'),
    (4,  49, 'x-windows-dm',             'ipv4-list',        'X Window display managers'),
    (4,  58, 'T1',                       'uint32',           'renewal time in seconds'),
    (4,  59, 'T2',                       'uint32',           'rebinding time in seconds'),
    (4,  60, 'vendor-class',             'string',           'vendor class identifier sent by the server, e.g. PXEClient'),
    (4,  64, 'nis+-domain',              'string',           'NIS+ domain'),
    (4,  65, 'nis+-server',              'ipv4-list',        'NIS+ servers'),
    (4,  66, 'tftp-server',              'string',           'TFTP server name (a profile''s tftp_server_name; not settable)'),
    (4,  67, 'bootfile-name',            'string',           'boot file name (a profile''s boot files; not settable)'),
    (4,  68, 'mobile-ip-home',           'ipv4-list',        'mobile IP home agents'),
    (4,  69, 'smtp-server',              'ipv4-list',        'SMTP servers'),
    (4,  70, 'pop3-server',              'ipv4-list',        'POP3 servers'),
    (4,  71, 'nntp-server',              'ipv4-list',        'NNTP servers'),
    (4,  74, 'irc-server',               'ipv4-list',        'IRC servers'),
    (4,  77, 'user-class',               'string',           'user class (sent by clients; not settable)'),
    (4,  80, 'rapid-commit',             'bool',             'rapid commit (protocol; not settable)'),
    (4,  93, 'client-arch',              'uint16',           'client system architecture (sent by clients; not settable)'),
    (4,  94, 'client-interface-id',      'hex',              'client network interface (sent by clients; not settable)'),
    (4,  97, 'client-machine-id',        'hex',              'client machine identifier (sent by clients; not settable)'),
    (4, 100, 'posix-timezone',           'string',           'POSIX TZ string (RFC 4833)'),
    (4, 101, 'tzdb-timezone',            'string',           'tz database name, e.g. Europe/Berlin (RFC 4833)'),
    (4, 108, 'ipv6-only',                'uint32',           'IPv6-only preferred: seconds to stay without IPv4 (RFC 8925)'),
    (4, 119, 'domain-search',            'domain-list',      'DNS search list (RFC 3397)'),
    (4, 120, 'sip-server',               'ipv4-list',        'SIP servers (RFC 3361)'),
    (4, 121, 'classless-static-route',   'classless-routes', 'network/prefix,router pairs (RFC 3442)'),
    (4, 125, 'vendor-id-encap',          'hex',              'vendor-identifying vendor options (not settable)'),
    (4, 150, 'tftp-server-address',      'ipv4-list',        'TFTP servers (RFC 5859)'),
    (6,  21, 'sip-server-domain',        'domain-list',      'SIP server domain names (RFC 3319)'),
    (6,  22, 'sip-server',               'ipv6-list',        'SIP servers (RFC 3319)'),
    (6,  23, 'dns-server',               'ipv6-list',        'DNS servers (RFC 3646)'),
    (6,  24, 'domain-search',            'domain-list',      'DNS search list (RFC 3646)'),
    (6,  27, 'nis-server',               'ipv6-list',        'NIS servers (RFC 3898)'),
    (6,  28, 'nis+-server',              'ipv6-list',        'NIS+ servers (RFC 3898)'),
    (6,  29, 'nis-domain',               'domain-list',      'NIS domain (RFC 3898)'),
    (6,  30, 'nis+-domain',              'domain-list',      'NIS+ domain (RFC 3898)'),
    (6,  31, 'sntp-server',              'ipv6-list',        'SNTP servers (RFC 4075)'),
    (6,  32, 'information-refresh-time', 'uint32',           'seconds until a stateless client asks again (RFC 4242)'),
    (6,  41, 'posix-timezone',           'string',           'POSIX TZ string (RFC 4833)'),
    (6,  42, 'tzdb-timezone',            'string',           'tz database name (RFC 4833)'),
    (6,  56, 'ntp-server',               'ipv6-list',        'NTP servers (RFC 5908)'),
    (6,  59, 'bootfile-url',             'string',           'boot file URL (RFC 5970)'),
    (6,  60, 'bootfile-param',           'string',           'boot file parameter (RFC 5970)');

-- Options nobody may set by hand, and why: dnsmasq or another ipmanager setting produces them,
-- or they are the protocol's own or sent by clients. NULL when the option may be set.
CREATE FUNCTION ipmanager.option_reserved(family integer, number integer)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN family = 4 AND (number < 1 OR number > 254) THEN
            'DHCPv4 option numbers run from 1 to 254'
        WHEN family = 6 AND (number < 1 OR number > 65535) THEN
            'DHCPv6 option numbers run from 1 to 65535'
        WHEN family = 4 AND number = 1 THEN 'the netmask comes from the subnet''s CIDR'
        WHEN family = 4 AND number = 3 THEN 'the router is the subnet''s gateway (--gateway, subnets.gateway)'
        WHEN family = 4 AND number = 12 THEN 'the host name is the host''s own (hosts.hostname)'
        WHEN family = 4 AND number = 15 THEN 'the domain name is the subnet''s domain (--domain, subnets.domain)'
        WHEN family = 4 AND number IN (66, 67) THEN
            'the TFTP server name and boot file are profile settings (profile --tftp-server-name, --boot-file)'
        WHEN family = 4 AND (number BETWEEN 50 AND 57 OR number IN (61, 77, 80, 81, 82, 93, 94, 97, 125)) THEN
            'it belongs to the DHCP protocol itself or is sent by clients, and dnsmasq handles it'
        WHEN family = 6 AND (number <= 20 OR number IN (25, 26, 39)) THEN
            'it belongs to the DHCPv6 protocol itself or is sent by clients, and dnsmasq handles it'
    END
$$;

COMMENT ON FUNCTION ipmanager.option_reserved(integer, integer) IS
    'Why option number of family (4 or 6) cannot be set on a subnet or profile, or NULL when it can.';

-- The rule of each value type, as the messages state it.
CREATE FUNCTION ipmanager.option_type_rule(type text)
    RETURNS text
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE type
        WHEN 'ipv4-list' THEN 'a list of IPv4 addresses separated by commas, e.g. 10.1.0.53,10.1.0.54'
        WHEN 'ipv6-list' THEN 'a list of IPv6 addresses separated by commas, e.g. 2001:db8::53,2001:db8::54'
        WHEN 'domain-list' THEN 'a list of domain names separated by commas, e.g. office.example,example.com (RFC 1123 names, no trailing dot)'
        WHEN 'string' THEN 'text of 1 to 255 printable ASCII characters without ''"'', ''\'', ''#'' or '','', and no blank at either end'
        WHEN 'uint8' THEN 'a whole number from 0 to 255'
        WHEN 'uint16' THEN 'a whole number from 0 to 65535'
        WHEN 'uint32' THEN 'a whole number from 0 to 4294967295'
        WHEN 'bool' THEN 'true or false (also yes/no, on/off, 1/0)'
        WHEN 'hex' THEN 'hexadecimal bytes, with or without '':'' between them, e.g. de:ad:be:ef'
        WHEN 'classless-routes' THEN 'network/prefix,router pairs separated by commas, e.g. 10.2.0.0/16,10.1.0.1,0.0.0.0/0,10.1.0.1'
    END
$$;

COMMENT ON FUNCTION ipmanager.option_type_rule(text) IS
    'The rule of an option value type in words; NULL for a type that does not exist.';

-- The normal form of value as type, or NULL when it breaks the type's rule (the caller raises
-- with option_type_rule). Lists are trimmed around each item and joined by ',' without blanks;
-- addresses as host() prints them; numbers without leading zeros; bool as 1/0; hex as lowercase
-- two-digit bytes joined by ':'. The length bounds keep every rendered line far below 1,000
-- bytes.
CREATE FUNCTION ipmanager.normalise_option_value(type text, ip_family integer, value text)
    RETURNS text
    LANGUAGE plpgsql
    IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    items   text[];
    item    text;
    result  text[] := '{}';
    addr    inet;
    net     cidr;
    digits  text;
    n       numeric;
BEGIN
    IF value IS NULL OR octet_length(value) > 500 OR value ~ '[^\x20-\x7e]' THEN
        RETURN NULL;
    END IF;
    IF type IN ('ipv4-list', 'ipv6-list', 'domain-list', 'classless-routes') THEN
        items := string_to_array(value, ',');
        IF cardinality(items) = 0 THEN
            RETURN NULL;
        END IF;
        FOREACH item IN ARRAY items LOOP
            item := btrim(item, ' ');
            IF type = 'domain-list' THEN
                IF NOT coalesce(ipmanager.is_valid_dns_name(item), false) THEN
                    RETURN NULL;
                END IF;
                result := result || item;
            ELSIF type = 'classless-routes' AND item LIKE '%/%' THEN
                IF item !~ '^[0-9.]+/[0-9]{1,2}$' THEN
                    RETURN NULL;
                END IF;
                BEGIN
                    net := item::cidr;
                EXCEPTION WHEN data_exception THEN
                    RETURN NULL;
                END;
                IF family(net) <> 4 THEN
                    RETURN NULL;
                END IF;
                -- A network must be followed by its router.
                IF cardinality(result) % 2 = 1 THEN
                    RETURN NULL;
                END IF;
                result := result || net::text;
            ELSE
                IF item !~ '^[0-9A-Fa-f:.]+$' THEN
                    RETURN NULL;
                END IF;
                BEGIN
                    addr := item::inet;
                EXCEPTION WHEN data_exception THEN
                    RETURN NULL;
                END;
                IF masklen(addr) <> (CASE family(addr) WHEN 4 THEN 32 ELSE 128 END)
                   OR family(addr) <> (CASE type WHEN 'ipv6-list' THEN 6 ELSE 4 END) THEN
                    RETURN NULL;
                END IF;
                IF type = 'classless-routes' AND cardinality(result) % 2 = 0 THEN
                    RETURN NULL;
                END IF;
                result := result || host(addr);
            END IF;
        END LOOP;
        IF type = 'classless-routes' AND cardinality(result) % 2 = 1 THEN
            RETURN NULL;
        END IF;
        RETURN array_to_string(result, ',');
    ELSIF type = 'string' THEN
        IF value ~ '^".*"$' AND octet_length(value) >= 2 THEN
            value := substr(value, 2, length(value) - 2);
        END IF;
        IF value ~ '^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$' AND value !~ '["\\#,]'
           AND octet_length(value) <= 255 THEN
            RETURN value;
        END IF;
        RETURN NULL;
    ELSIF type IN ('uint8', 'uint16', 'uint32') THEN
        IF value !~ '^[0-9]{1,10}$' THEN
            RETURN NULL;
        END IF;
        n := value::numeric;
        IF n > (CASE type WHEN 'uint8' THEN 255 WHEN 'uint16' THEN 65535 ELSE 4294967295 END) THEN
            RETURN NULL;
        END IF;
        RETURN n::text;
    ELSIF type = 'bool' THEN
        RETURN CASE lower(value)
            WHEN 'true' THEN '1' WHEN 'yes' THEN '1' WHEN 'on' THEN '1' WHEN '1' THEN '1'
            WHEN 'false' THEN '0' WHEN 'no' THEN '0' WHEN 'off' THEN '0' WHEN '0' THEN '0'
        END;
    ELSIF type = 'hex' THEN
        IF value ~ '^[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2})*$' THEN
            digits := array_to_string(ARRAY(SELECT lpad(o.b, 2, '0')
                                             FROM unnest(string_to_array(value, ':'))
                                                  WITH ORDINALITY AS o (b, i)
                                             ORDER BY o.i), '');
        ELSIF value ~ '^([0-9A-Fa-f]{2})+$' THEN
            digits := value;
        ELSE
            RETURN NULL;
        END IF;
        IF octet_length(digits) > 2 * 160 THEN
            RETURN NULL;
        END IF;
        RETURN lower(regexp_replace(digits, '(..)(?!$)', '\1:', 'g'));
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION ipmanager.normalise_option_value(text, integer, text) IS
    'The normal form of an option value of type (see option_type_rule) for DHCPv<ip_family>, or NULL when the value breaks the type''s rule.';

--------------------------------------------------------------------------------------------------
-- Profiles
--------------------------------------------------------------------------------------------------

CREATE TABLE ipmanager.profiles (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text        NOT NULL CONSTRAINT profiles_name_unique UNIQUE,
    boot_file        text,
    boot_file_uefi   text,
    boot_file_arm64  text,
    boot_file_ipxe   text,
    next_server      inet,
    tftp_server_name text,
    comment          text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE ipmanager.profiles IS
    'Named sets of DHCPv4 options and PXE boot settings for groups of hosts (hosts.profile_id, subnets.default_profile_id). Rendered into the include file under a tag derived from id, never from the name.';
COMMENT ON COLUMN ipmanager.profiles.id IS 'Surrogate key; the rendered tag is profile<id>.';
COMMENT ON COLUMN ipmanager.profiles.name IS
    'Unique name: 1-63 letters, digits, ''-'', ''_'' or ''.'', starting with a letter or digit.';
COMMENT ON COLUMN ipmanager.profiles.boot_file IS
    'Boot file for BIOS clients and clients that send no architecture (option 93), or NULL.';
COMMENT ON COLUMN ipmanager.profiles.boot_file_uefi IS 'Boot file for UEFI x86-64 clients (architecture 7 and 9), or NULL.';
COMMENT ON COLUMN ipmanager.profiles.boot_file_arm64 IS 'Boot file for UEFI ARM64 clients (architecture 11), or NULL.';
COMMENT ON COLUMN ipmanager.profiles.boot_file_ipxe IS
    'Boot file (or URL) for clients that are already iPXE (user class iPXE, option 175): chain-loading; NULL for none.';
COMMENT ON COLUMN ipmanager.profiles.next_server IS 'IPv4 address of the TFTP server (siaddr, next-server), or NULL.';
COMMENT ON COLUMN ipmanager.profiles.tftp_server_name IS 'Host name of the TFTP server (sname), or NULL.';
COMMENT ON COLUMN ipmanager.profiles.comment IS 'Free text for admins; never rendered.';
COMMENT ON COLUMN ipmanager.profiles.created_at IS 'When the row was inserted.';
COMMENT ON COLUMN ipmanager.profiles.updated_at IS 'When the row was last updated (maintained by a trigger).';

CREATE TRIGGER profiles_touch_updated_at
    BEFORE UPDATE ON ipmanager.profiles
    FOR EACH ROW EXECUTE FUNCTION ipmanager.touch_updated_at();

-- Boot file names as TFTP paths or (for iPXE) URLs: letters, digits and . _ - / : + = ? & % ~ @,
-- starting with a letter, digit, '_', '.' or '/', at most 128 bytes (the BOOTP file field); no
-- comma, blank, quote, '#' or backslash, so a name can neither add a field to dhcp-boot nor
-- end the line; and not starting like a dnsmasq tag (tag:, set:, net:).
CREATE FUNCTION ipmanager.is_valid_boot_file(file text)
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT file ~ '^[A-Za-z0-9_./][A-Za-z0-9._/:+=?&%~@-]{0,127}$'
       AND lower(file) !~ '^(tag|set|net):'
$$;

COMMENT ON FUNCTION ipmanager.is_valid_boot_file(text) IS
    'True for a boot file name or URL ipmanager can render: 1-128 bytes of letters, digits and ._-/:+=?&%~@, not starting with ''-'' or a dnsmasq tag prefix.';

CREATE FUNCTION ipmanager.profiles_validate()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    field  text;
    file   text;
BEGIN
    IF NEW.name IS NOT NULL AND NEW.name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' THEN
        RAISE EXCEPTION 'profiles.name % is not a valid profile name: 1 to 63 letters, digits, ''-'', ''_'' or ''.'', starting with a letter or digit',
                quote_literal(NEW.name)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'profiles',
                  COLUMN = 'name', CONSTRAINT = 'profiles_name_valid';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name THEN
        IF EXISTS (SELECT 1 FROM ipmanager.profiles p WHERE p.name = NEW.name AND p.id <> NEW.id) THEN
            RAISE EXCEPTION 'profiles.name % is already used: profile names are unique',
                    quote_literal(NEW.name)
                USING ERRCODE = 'unique_violation', SCHEMA = 'ipmanager', TABLE = 'profiles',
                      COLUMN = 'name', CONSTRAINT = 'profiles_name_unique';
        END IF;
    END IF;
    FOREACH field IN ARRAY ARRAY['boot_file', 'boot_file_uefi', 'boot_file_arm64', 'boot_file_ipxe'] LOOP
        file := to_jsonb(NEW) ->> field;
        IF file IS NOT NULL AND NOT ipmanager.is_valid_boot_file(file) THEN
            RAISE EXCEPTION 'profiles.% % of profile % is not a valid boot file name: 1 to 128 letters, digits or ''._-/:+=?&%%~@'', not starting with ''-'' or a tag prefix (tag:, set:, net:); no blanks, commas, quotes, ''#'' or ''\''',
                    field, quote_literal(file), quote_literal(NEW.name)
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'profiles',
                      COLUMN = field, CONSTRAINT = 'profiles_boot_file_valid';
        END IF;
    END LOOP;
    IF NEW.next_server IS NOT NULL THEN
        NEW.next_server := ipmanager.host_address(NEW.next_server);
        IF family(NEW.next_server) <> 4 THEN
            RAISE EXCEPTION 'profiles.next_server % of profile % is not an IPv4 address: the next server (siaddr) of DHCPv4 is an IPv4 address',
                    host(NEW.next_server), quote_literal(NEW.name)
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'profiles',
                      COLUMN = 'next_server', CONSTRAINT = 'profiles_next_server_valid';
        END IF;
    END IF;
    -- The BOOTP sname field holds 64 bytes with its terminating zero.
    IF NEW.tftp_server_name IS NOT NULL
       AND NOT (ipmanager.is_valid_dns_name(NEW.tftp_server_name) AND octet_length(NEW.tftp_server_name) <= 63) THEN
        RAISE EXCEPTION 'profiles.tftp_server_name % of profile % is not a valid server name: an RFC 1123 host name of at most 63 characters (letters, digits, inner hyphens, dot-separated labels)',
                quote_literal(NEW.tftp_server_name), quote_literal(NEW.name)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'profiles',
                  COLUMN = 'tftp_server_name', CONSTRAINT = 'profiles_tftp_server_name_valid';
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.profiles_validate() IS
    'BEFORE INSERT OR UPDATE trigger on profiles: enforces the name, uniqueness, boot file, next server and TFTP server name rules with admin-readable messages.';

CREATE TRIGGER profiles_validate
    BEFORE INSERT OR UPDATE ON ipmanager.profiles
    FOR EACH ROW EXECUTE FUNCTION ipmanager.profiles_validate();

-- The foreign keys (ON DELETE RESTRICT) are the race-free rule; this gives the refusal words
-- and the counts, as sites_keep_subnets does for sites.
CREATE FUNCTION ipmanager.profiles_keep_users()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    n_hosts   bigint;
    n_subnets bigint;
    example   text;
BEGIN
    SELECT count(*), min(h.hostname) INTO n_hosts, example
    FROM ipmanager.hosts h WHERE h.profile_id = OLD.id;
    SELECT count(*) INTO n_subnets FROM ipmanager.subnets s WHERE s.default_profile_id = OLD.id;
    IF n_hosts > 0 OR n_subnets > 0 THEN
        RAISE EXCEPTION 'profile % is still used by % host(s)% and % subnet(s) as their default profile: a profile in use cannot be removed',
                quote_literal(OLD.name), n_hosts,
                CASE WHEN n_hosts > 0 THEN format(' (e.g. %L)', example) ELSE '' END,
                n_subnets
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = 'profiles',
                  CONSTRAINT = CASE WHEN n_hosts > 0 THEN 'hosts_profile_id_fkey'
                                    ELSE 'subnets_default_profile_id_fkey' END,
                  HINT = 'Take the hosts out first: ipmanager host set HOST --no-profile (UPDATE ipmanager.hosts SET profile_id = NULL WHERE ...), and the subnets: ipmanager subnet set SUBNET --default-profile none.';
    END IF;
    RETURN OLD;
END
$$;

COMMENT ON FUNCTION ipmanager.profiles_keep_users() IS
    'BEFORE DELETE trigger on profiles: refuses to remove a profile that hosts or subnets use, counting them.';

CREATE TRIGGER profiles_keep_users
    BEFORE DELETE ON ipmanager.profiles
    FOR EACH ROW EXECUTE FUNCTION ipmanager.profiles_keep_users();

CREATE FUNCTION ipmanager.profile_id(name text)
    RETURNS bigint
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result bigint;
BEGIN
    SELECT p.id INTO result FROM ipmanager.profiles p WHERE p.name = profile_id.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'profile % does not exist: give a profile name as listed by ''ipmanager profile list''',
                coalesce(quote_literal(profile_id.name), 'NULL')
            USING ERRCODE = 'no_data_found', SCHEMA = 'ipmanager', TABLE = 'profiles';
    END IF;
    RETURN result;
END
$$;

COMMENT ON FUNCTION ipmanager.profile_id(text) IS
    'The id of the profile with this name, for UPDATE ... SET profile_id = ipmanager.profile_id(''pxe''); raises P0002 (no_data_found) when there is none.';

--------------------------------------------------------------------------------------------------
-- Hosts and subnets refer to profiles; DNS-only hosts
--------------------------------------------------------------------------------------------------

ALTER TABLE ipmanager.hosts
    ALTER COLUMN mac DROP NOT NULL,
    ADD COLUMN profile_id bigint
        CONSTRAINT hosts_profile_id_fkey REFERENCES ipmanager.profiles (id) ON DELETE RESTRICT,
    -- host_aliases refers to (id, subnet_id) so that an alias moves with its host.
    ADD CONSTRAINT hosts_id_subnet_unique UNIQUE (id, subnet_id);

-- Partial: the agent reads the few hosts with a profile and the few DNS-only names on every
-- snapshot, and neither index costs the many plain reservations anything.
CREATE INDEX hosts_profile ON ipmanager.hosts (profile_id) WHERE profile_id IS NOT NULL;
CREATE INDEX hosts_dns_only ON ipmanager.hosts (subnet_id) WHERE mac IS NULL;

COMMENT ON COLUMN ipmanager.hosts.mac IS
    'Hardware address of the client: unicast and not all-zero; unique within the subnet. NULL: a DNS-only name, served in DNS only, whose address stays reserved.';
COMMENT ON COLUMN ipmanager.hosts.profile_id IS
    'The profile (options and PXE boot settings) of the host, or NULL for its subnet''s default profile, if any.';

ALTER TABLE ipmanager.subnets
    ADD COLUMN default_profile_id bigint
        CONSTRAINT subnets_default_profile_id_fkey REFERENCES ipmanager.profiles (id) ON DELETE RESTRICT;

COMMENT ON COLUMN ipmanager.subnets.default_profile_id IS
    'The profile of the subnet''s hosts that name none (hosts.profile_id NULL), or NULL.';

-- The duplicate words of V3, now for DNS-only names too (their MAC is NULL).
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
    END
$$;

--------------------------------------------------------------------------------------------------
-- Host aliases
--------------------------------------------------------------------------------------------------

-- subnet_id is the host's, kept equal by the foreign key's ON UPDATE CASCADE, so that one unique
-- index holds the "unique per subnet, ignoring case" rule among aliases; the rule between aliases
-- and host names spans two tables and is kept by the triggers below.
CREATE TABLE ipmanager.host_aliases (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id    bigint      NOT NULL,
    subnet_id  bigint      NOT NULL,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT host_aliases_host_fkey FOREIGN KEY (host_id, subnet_id)
        REFERENCES ipmanager.hosts (id, subnet_id) ON UPDATE CASCADE ON DELETE CASCADE
);

CREATE UNIQUE INDEX host_aliases_subnet_name_unique ON ipmanager.host_aliases (subnet_id, lower(name));
CREATE INDEX host_aliases_host ON ipmanager.host_aliases (host_id);

COMMENT ON TABLE ipmanager.host_aliases IS
    'Extra DNS names of a host: served as more names of its address (A/AAAA) in the addn-hosts file; the PTR stays the host''s own name.';
COMMENT ON COLUMN ipmanager.host_aliases.id IS 'Surrogate key.';
COMMENT ON COLUMN ipmanager.host_aliases.host_id IS 'The host (hosts.id) the name belongs to; removing the host removes its aliases.';
COMMENT ON COLUMN ipmanager.host_aliases.subnet_id IS
    'The host''s subnet, filled in and kept up to date from the host (leave it out).';
COMMENT ON COLUMN ipmanager.host_aliases.name IS
    'The alias: a host name by the rules of hosts.hostname, unique ignoring case among the host names and aliases of the subnet.';
COMMENT ON COLUMN ipmanager.host_aliases.created_at IS 'When the row was inserted.';
COMMENT ON COLUMN ipmanager.host_aliases.updated_at IS 'When the row was last updated (maintained by a trigger).';

CREATE TRIGGER host_aliases_touch_updated_at
    BEFORE UPDATE ON ipmanager.host_aliases
    FOR EACH ROW EXECUTE FUNCTION ipmanager.touch_updated_at();

-- An alias and a host name of one subnet are in different tables, so no index sees both. A
-- statement that writes alias names therefore first takes SHARE ROW EXCLUSIVE on hosts: it waits
-- for host writers in flight (and then sees their names) and host writers starting later wait for
-- it (and then see the alias), the way subnets_lock_hosts serialises renumberings. It conflicts
-- with itself, so two alias writers queue instead of deadlocking on the upgrade. Only INSERT and
-- UPDATE OF name take it: an alias following its host to another subnet (the cascade) is checked
-- by the row trigger while the host row is locked.
CREATE FUNCTION ipmanager.lock_hosts_for_aliases()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    LOCK TABLE ipmanager.hosts IN SHARE ROW EXCLUSIVE MODE;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION ipmanager.lock_hosts_for_aliases() IS
    'Statement-level BEFORE INSERT OR UPDATE OF name trigger on host_aliases: locks hosts in SHARE ROW EXCLUSIVE mode so that aliases and host names are compared without races.';

CREATE TRIGGER host_aliases_lock_hosts
    BEFORE INSERT OR UPDATE OF name ON ipmanager.host_aliases
    FOR EACH STATEMENT EXECUTE FUNCTION ipmanager.lock_hosts_for_aliases();

CREATE FUNCTION ipmanager.host_aliases_validate()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    owner   record;
    other   record;
    names   integer;
    total   bigint;
    domain  text;
BEGIN
    SELECT h.id, h.hostname, h.subnet_id, h.mac, h.ip INTO owner
    FROM ipmanager.hosts h WHERE h.id = NEW.host_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'host_aliases.host_id % does not exist: an alias belongs to an existing host',
                coalesce(NEW.host_id::text, 'NULL')
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = 'host_aliases',
                  COLUMN = 'host_id', CONSTRAINT = 'host_aliases_host_fkey';
    END IF;
    NEW.subnet_id := owner.subnet_id;

    IF NOT ipmanager.is_valid_dns_name(NEW.name) THEN
        RAISE EXCEPTION 'host_aliases.name % of host % is not a valid hostname: only letters, digits and inner hyphens in dot-separated labels of at most 63 characters, 253 in all, no trailing dot, last label not all digits (RFC 1123)',
                quote_literal(NEW.name), quote_literal(owner.hostname)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'host_aliases',
                  COLUMN = 'name', CONSTRAINT = 'host_aliases_name_valid';
    END IF;
    IF lower(NEW.name) IN ('ignore', 'infinite') OR NEW.name ~ '^[0-9]+[smhdwSMHDW]$' THEN
        RAISE EXCEPTION 'host_aliases.name % of host % is not usable as a hostname: dnsmasq reads ignore, infinite and digits with an s/m/h/d/w suffix as a keyword or lease time',
                quote_literal(NEW.name), quote_literal(owner.hostname)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'host_aliases',
                  COLUMN = 'name', CONSTRAINT = 'host_aliases_name_valid';
    END IF;

    -- The same words as a duplicate host name: the other holder is a host or an alias.
    SELECT h.hostname, h.mac, h.ip, NULL::text AS alias_of INTO other
    FROM ipmanager.hosts h
    WHERE h.subnet_id = NEW.subnet_id AND lower(h.hostname) = lower(NEW.name);
    IF NOT FOUND THEN
        SELECT a.name AS hostname, h.mac, h.ip, h.hostname AS alias_of INTO other
        FROM ipmanager.host_aliases a JOIN ipmanager.hosts h ON h.id = a.host_id
        WHERE a.subnet_id = NEW.subnet_id AND lower(a.name) = lower(NEW.name) AND a.id <> NEW.id;
    END IF;
    IF FOUND THEN
        RAISE EXCEPTION 'host_aliases.name % is already used in subnet % (%, %, %): host names and aliases are unique per subnet, ignoring case',
                quote_literal(NEW.name),
                quote_literal((SELECT s.name FROM ipmanager.subnets s WHERE s.id = NEW.subnet_id)),
                CASE WHEN other.alias_of IS NULL THEN format('host %L', other.hostname)
                     ELSE format('alias of %L', other.alias_of) END,
                coalesce(other.mac::text, 'DNS only'), host(other.ip)
            USING ERRCODE = 'unique_violation', SCHEMA = 'ipmanager', TABLE = 'host_aliases',
                  COLUMN = 'name', CONSTRAINT = 'host_aliases_subnet_name_unique';
    END IF;

    -- The host's addn-hosts line holds its address, its names and their FQDNs: bound it well
    -- below dnsmasq's 1,024-byte chunk. A later, longer domain is caught by the renderer.
    IF TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name THEN
        SELECT s.domain INTO domain FROM ipmanager.subnets s WHERE s.id = NEW.subnet_id;
        SELECT count(*) + 2,
               coalesce(sum(octet_length(a.name)), 0) + octet_length(NEW.name) + octet_length(owner.hostname)
            INTO names, total
        FROM ipmanager.host_aliases a WHERE a.host_id = NEW.host_id AND a.id <> NEW.id;
        IF names > 9 OR 2 * total + names * (coalesce(octet_length(domain), 0) + 3) + 40 >= 900 THEN
            RAISE EXCEPTION 'host_aliases.name %: host % would have too many or too long names (% with the host name): a host has at most 8 aliases, and its names with their FQDNs must fit one addn-hosts line of less than 900 bytes',
                    quote_literal(NEW.name), quote_literal(owner.hostname), names
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'host_aliases',
                      COLUMN = 'name', CONSTRAINT = 'host_aliases_line_fits';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.host_aliases_validate() IS
    'BEFORE INSERT OR UPDATE trigger on host_aliases: fills subnet_id from the host, enforces the hostname rules, uniqueness among the subnet''s host names and aliases, and the length of the host''s addn-hosts line.';

CREATE TRIGGER host_aliases_validate
    BEFORE INSERT OR UPDATE ON ipmanager.host_aliases
    FOR EACH ROW EXECUTE FUNCTION ipmanager.host_aliases_validate();

-- The other direction: a host name must not be an alias of the subnet, a profile must exist, and
-- a DNS-only name must stay out of the dynamic range. V3's hosts_validate with these checks
-- added before the duplicate check, rather than a trigger of its own: a second plpgsql trigger
-- per row made 100,000-row inserts a third slower. MAC checks of V1 pass NULL through (a NULL
-- comparison is not true), and the MAC duplicate probe finds nothing for NULL.
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
    'BEFORE INSERT OR UPDATE trigger on hosts: normalises ip, fills a missing subnet_id and enforces hostname, MAC, lease time, address-in-subnet, uniqueness (IP; MAC and host name per subnet, host names against aliases), profile and DNS-only-outside-the-range rules with admin-readable messages.';

-- The subnet side: the default profile must exist, and a new or widened dynamic range must not
-- take a DNS-only name's address. Runs after subnets_validate, which normalised the range.
CREATE FUNCTION ipmanager.subnets_validate_profile()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    example record;
BEGIN
    IF NEW.default_profile_id IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.default_profile_id IS DISTINCT FROM OLD.default_profile_id)
       AND NOT EXISTS (SELECT 1 FROM ipmanager.profiles p WHERE p.id = NEW.default_profile_id) THEN
        RAISE EXCEPTION 'subnets.default_profile_id % of subnet % does not exist: a subnet can only default to an existing profile',
                NEW.default_profile_id, quote_literal(NEW.name)
            USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'default_profile_id', CONSTRAINT = 'subnets_default_profile_id_fkey',
                  HINT = 'Create it first with ipmanager profile add NAME, and refer to it with ipmanager.profile_id(NAME).';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.range_start IS NOT NULL
       AND (NEW.range_start, NEW.range_end) IS DISTINCT FROM (OLD.range_start, OLD.range_end) THEN
        SELECT h.hostname, h.ip INTO example
        FROM ipmanager.hosts h
        WHERE h.subnet_id = NEW.id AND h.mac IS NULL
          AND h.ip BETWEEN NEW.range_start AND NEW.range_end
        ORDER BY h.ip LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'subnets.range_start % to range_end % of subnet % would take the address % of DNS-only name %: dnsmasq would lease it to a client',
                    host(NEW.range_start), host(NEW.range_end), quote_literal(NEW.name),
                    host(example.ip), quote_literal(example.hostname)
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                      COLUMN = 'range_start', CONSTRAINT = 'hosts_dns_only_outside_range',
                      HINT = 'Keep the range clear of DNS-only names, or move those names first.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.subnets_validate_profile() IS
    'BEFORE INSERT OR UPDATE trigger on subnets, after subnets_validate: the default profile must exist and the dynamic range must not cover a DNS-only name.';

CREATE TRIGGER subnets_validate_profile
    BEFORE INSERT OR UPDATE ON ipmanager.subnets
    FOR EACH ROW EXECUTE FUNCTION ipmanager.subnets_validate_profile();

--------------------------------------------------------------------------------------------------
-- Options of subnets and profiles
--------------------------------------------------------------------------------------------------

CREATE TABLE ipmanager.subnet_options (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subnet_id  bigint      NOT NULL
                           CONSTRAINT subnet_options_subnet_id_fkey REFERENCES ipmanager.subnets (id)
                           ON DELETE CASCADE,
    option     text        NOT NULL,
    number     integer,
    type       text,
    value      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subnet_options_unique UNIQUE (subnet_id, number)
);

COMMENT ON TABLE ipmanager.subnet_options IS
    'DHCP options handed to every client of a subnet (DHCPv4 or DHCPv6 by the subnet''s family). Rendered as dhcp-option lines for the subnet''s tag. Removed with the subnet.';
COMMENT ON COLUMN ipmanager.subnet_options.id IS 'Surrogate key.';
COMMENT ON COLUMN ipmanager.subnet_options.subnet_id IS 'The subnet.';
COMMENT ON COLUMN ipmanager.subnet_options.option IS
    'The option by catalogue name (dhcp_options.name) or number; stored as the catalogue name when there is one, else as the number.';
COMMENT ON COLUMN ipmanager.subnet_options.number IS 'The option code, filled in from option.';
COMMENT ON COLUMN ipmanager.subnet_options.type IS
    'The value type: the catalogue''s (filled in), or declared for a number the catalogue does not know; a value in double quotes declares string.';
COMMENT ON COLUMN ipmanager.subnet_options.value IS 'The value, checked against its type and stored in normal form (see normalise_option_value).';
COMMENT ON COLUMN ipmanager.subnet_options.created_at IS 'When the row was inserted.';
COMMENT ON COLUMN ipmanager.subnet_options.updated_at IS 'When the row was last updated (maintained by a trigger).';

CREATE TABLE ipmanager.profile_options (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id bigint      NOT NULL
                           CONSTRAINT profile_options_profile_id_fkey REFERENCES ipmanager.profiles (id)
                           ON DELETE CASCADE,
    option     text        NOT NULL,
    number     integer,
    type       text,
    value      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT profile_options_unique UNIQUE (profile_id, number)
);

COMMENT ON TABLE ipmanager.profile_options IS
    'DHCPv4 options handed to the hosts of a profile, in addition to (and taking precedence over) their subnet''s. Removed with the profile.';
COMMENT ON COLUMN ipmanager.profile_options.id IS 'Surrogate key.';
COMMENT ON COLUMN ipmanager.profile_options.profile_id IS 'The profile.';
COMMENT ON COLUMN ipmanager.profile_options.option IS
    'The option by catalogue name (dhcp_options.name) or number; stored as the catalogue name when there is one, else as the number.';
COMMENT ON COLUMN ipmanager.profile_options.number IS 'The option code, filled in from option.';
COMMENT ON COLUMN ipmanager.profile_options.type IS
    'The value type: the catalogue''s (filled in), or declared for a number the catalogue does not know; a value in double quotes declares string.';
COMMENT ON COLUMN ipmanager.profile_options.value IS 'The value, checked against its type and stored in normal form (see normalise_option_value).';
COMMENT ON COLUMN ipmanager.profile_options.created_at IS 'When the row was inserted.';
COMMENT ON COLUMN ipmanager.profile_options.updated_at IS 'When the row was last updated (maintained by a trigger).';

CREATE TRIGGER subnet_options_touch_updated_at
    BEFORE UPDATE ON ipmanager.subnet_options
    FOR EACH ROW EXECUTE FUNCTION ipmanager.touch_updated_at();
CREATE TRIGGER profile_options_touch_updated_at
    BEFORE UPDATE ON ipmanager.profile_options
    FOR EACH ROW EXECUTE FUNCTION ipmanager.touch_updated_at();

-- One trigger function for both tables: resolves the option in the catalogue of the owner's
-- family, fills number and type, and checks and normalises the value. Every message names the
-- owner (subnet or profile), the option and the rule.
CREATE FUNCTION ipmanager.options_validate()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    owner_kind text;
    owner_name text;
    fam        integer;
    known      ipmanager.dhcp_options;
    reserved   text;
    normal     text;
    shown      text;
BEGIN
    IF TG_TABLE_NAME = 'subnet_options' THEN
        owner_kind := 'subnet';
        SELECT s.name, family(s.cidr) INTO owner_name, fam
        FROM ipmanager.subnets s WHERE s.id = NEW.subnet_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'subnet_options.subnet_id % does not exist: options belong to an existing subnet',
                    coalesce(NEW.subnet_id::text, 'NULL')
                USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = TG_TABLE_NAME,
                      COLUMN = 'subnet_id', CONSTRAINT = 'subnet_options_subnet_id_fkey';
        END IF;
    ELSE
        owner_kind := 'profile';
        fam := 4;
        SELECT p.name INTO owner_name FROM ipmanager.profiles p WHERE p.id = NEW.profile_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'profile_options.profile_id % does not exist: options belong to an existing profile',
                    coalesce(NEW.profile_id::text, 'NULL')
                USING ERRCODE = 'foreign_key_violation', SCHEMA = 'ipmanager', TABLE = TG_TABLE_NAME,
                      COLUMN = 'profile_id', CONSTRAINT = 'profile_options_profile_id_fkey';
        END IF;
    END IF;

    NEW.option := btrim(NEW.option);
    IF NEW.option ~ '^[0-9]{1,5}$' THEN
        SELECT * INTO known FROM ipmanager.dhcp_options o
        WHERE o.family = fam AND o.number = NEW.option::integer;
        NEW.number := NEW.option::integer;
    ELSE
        SELECT * INTO known FROM ipmanager.dhcp_options o
        WHERE o.family = fam AND o.name = lower(NEW.option);
        IF NOT FOUND THEN
            RAISE EXCEPTION '%.option % of % % is not a DHCPv% option ipmanager knows: give a name from ipmanager.dhcp_options (family %) or an option number with a declared type',
                    TG_TABLE_NAME, quote_literal(NEW.option), owner_kind, quote_literal(owner_name),
                    fam, fam
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = TG_TABLE_NAME,
                      COLUMN = 'option', CONSTRAINT = 'options_option_known',
                      HINT = 'SELECT name, number, type FROM ipmanager.dhcp_options ORDER BY family, number; lists them.';
        END IF;
        NEW.number := known.number;
    END IF;
    shown := coalesce(known.name || ' (' || known.number || ')', NEW.number::text);

    reserved := ipmanager.option_reserved(fam, NEW.number);
    IF reserved IS NOT NULL THEN
        RAISE EXCEPTION '%.option % of % % cannot be set: %',
                TG_TABLE_NAME, shown, owner_kind, quote_literal(owner_name), reserved
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = TG_TABLE_NAME,
                  COLUMN = 'option', CONSTRAINT = 'options_option_settable';
    END IF;

    IF known.number IS NOT NULL THEN
        NEW.option := known.name;
        IF NEW.type IS NOT NULL AND NEW.type <> known.type
           AND (TG_OP = 'INSERT' OR NEW.type IS DISTINCT FROM OLD.type) THEN
            RAISE EXCEPTION '%.type % of option % in % % contradicts the catalogue: option % takes %',
                    TG_TABLE_NAME, quote_literal(NEW.type), shown, owner_kind, quote_literal(owner_name),
                    known.name, known.type
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = TG_TABLE_NAME,
                      COLUMN = 'type', CONSTRAINT = 'options_type_valid',
                      HINT = 'Leave the type out for an option the catalogue knows.';
        END IF;
        NEW.type := known.type;
    ELSE
        NEW.option := NEW.number::text;
        IF NEW.type IS NULL AND NEW.value ~ '^".*"$' THEN
            NEW.type := 'string';
        END IF;
        IF NEW.type IS NULL THEN
            RAISE EXCEPTION '%.type of option % in % % is missing: option % is not in the catalogue, so its type must be declared (ipv4-list, ipv6-list, domain-list, string, uint8, uint16, uint32, bool, hex or classless-routes)',
                    TG_TABLE_NAME, shown, owner_kind, quote_literal(owner_name), NEW.number
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = TG_TABLE_NAME,
                      COLUMN = 'type', CONSTRAINT = 'options_type_valid',
                      HINT = 'CLI: --option NUMBER:TYPE=VALUE, or a value in double quotes for a string; SQL: the type argument or column.';
        END IF;
        IF ipmanager.option_type_rule(NEW.type) IS NULL
           OR (fam = 6 AND NEW.type IN ('ipv4-list', 'classless-routes'))
           OR (fam = 4 AND NEW.type = 'ipv6-list') THEN
            RAISE EXCEPTION '%.type % of option % in % % is not a DHCPv% value type: ipv%-list, domain-list, string, uint8, uint16, uint32, bool, hex%',
                    TG_TABLE_NAME, quote_literal(NEW.type), shown, owner_kind, quote_literal(owner_name),
                    fam, fam, CASE fam WHEN 4 THEN ' or classless-routes' ELSE '' END
                USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = TG_TABLE_NAME,
                      COLUMN = 'type', CONSTRAINT = 'options_type_valid';
        END IF;
    END IF;

    normal := ipmanager.normalise_option_value(NEW.type, fam, NEW.value);
    IF normal IS NULL THEN
        RAISE EXCEPTION '%.value % of option % in % % is not valid: % takes %',
                TG_TABLE_NAME,
                CASE WHEN octet_length(NEW.value) <= 100 AND NEW.value !~ '[^\x20-\x7e]'
                     THEN quote_literal(NEW.value)
                     ELSE format('(%s bytes, not shown)', octet_length(NEW.value)) END,
                shown, owner_kind, quote_literal(owner_name), shown,
                ipmanager.option_type_rule(NEW.type)
                    || CASE WHEN NEW.type IN ('ipv4-list', 'ipv6-list', 'domain-list', 'classless-routes', 'hex')
                            THEN ', at most 500 bytes in all' ELSE '' END
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = TG_TABLE_NAME,
                  COLUMN = 'value', CONSTRAINT = 'options_value_valid';
    END IF;
    NEW.value := normal;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.options_validate() IS
    'BEFORE INSERT OR UPDATE trigger on subnet_options and profile_options: resolves the option in the catalogue, fills number and type, and checks and normalises the value, with messages naming the subnet or profile, the option and the rule.';

CREATE TRIGGER subnet_options_validate
    BEFORE INSERT OR UPDATE ON ipmanager.subnet_options
    FOR EACH ROW EXECUTE FUNCTION ipmanager.options_validate();
CREATE TRIGGER profile_options_validate
    BEFORE INSERT OR UPDATE ON ipmanager.profile_options
    FOR EACH ROW EXECUTE FUNCTION ipmanager.options_validate();

-- A subnet that changes family (a new cidr) would keep options of the old family.
CREATE FUNCTION ipmanager.subnets_keep_option_family()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF family(NEW.cidr) <> family(OLD.cidr)
       AND EXISTS (SELECT 1 FROM ipmanager.subnet_options o WHERE o.subnet_id = NEW.id) THEN
        RAISE EXCEPTION 'subnets.cidr of subnet % cannot change from IPv% to IPv%: its DHCP options are DHCPv% options',
                quote_literal(NEW.name), family(OLD.cidr), family(NEW.cidr), family(OLD.cidr)
            USING ERRCODE = 'check_violation', SCHEMA = 'ipmanager', TABLE = 'subnets',
                  COLUMN = 'cidr', CONSTRAINT = 'subnet_options_family',
                  HINT = 'Remove the options first (ipmanager subnet set SUBNET --unset-option NAME).';
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION ipmanager.subnets_keep_option_family() IS
    'BEFORE UPDATE OF cidr trigger on subnets: refuses a change of address family while the subnet has options.';

CREATE TRIGGER subnets_keep_option_family
    BEFORE UPDATE OF cidr ON ipmanager.subnets
    FOR EACH ROW EXECUTE FUNCTION ipmanager.subnets_keep_option_family();

-- Set or replace one option: the upsert conflicts on (owner, number), which the trigger fills in,
-- so '6' and 'dns-server' are the same option.
CREATE FUNCTION ipmanager.set_subnet_option(subnet text, option text, value text, type text DEFAULT NULL)
    RETURNS ipmanager.subnet_options
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result ipmanager.subnet_options;
BEGIN
    INSERT INTO ipmanager.subnet_options AS o (subnet_id, option, type, value)
    VALUES ((ipmanager.find_subnet(set_subnet_option.subnet)).id, set_subnet_option.option,
            set_subnet_option.type, set_subnet_option.value)
    ON CONFLICT ON CONSTRAINT subnet_options_unique DO UPDATE
        SET option = EXCLUDED.option, type = EXCLUDED.type, value = EXCLUDED.value
    RETURNING * INTO result;
    RETURN result;
END
$$;

COMMENT ON FUNCTION ipmanager.set_subnet_option(text, text, text, text) IS
    'Sets (or replaces) option (catalogue name or number) of the subnet given by name or CIDR to value; type only for numbers the catalogue does not know.';

CREATE FUNCTION ipmanager.unset_subnet_option(subnet text, option text)
    RETURNS boolean
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM ipmanager.subnet_options o
        WHERE o.subnet_id = (ipmanager.find_subnet(unset_subnet_option.subnet)).id
          AND (o.option = lower(btrim(unset_subnet_option.option))
               OR o.number::text = btrim(unset_subnet_option.option))
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

COMMENT ON FUNCTION ipmanager.unset_subnet_option(text, text) IS
    'Removes option (name or number) from the subnet given by name or CIDR; false when it was not set.';

CREATE FUNCTION ipmanager.set_profile_option(profile text, option text, value text, type text DEFAULT NULL)
    RETURNS ipmanager.profile_options
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result ipmanager.profile_options;
BEGIN
    INSERT INTO ipmanager.profile_options AS o (profile_id, option, type, value)
    VALUES (ipmanager.profile_id(set_profile_option.profile), set_profile_option.option,
            set_profile_option.type, set_profile_option.value)
    ON CONFLICT ON CONSTRAINT profile_options_unique DO UPDATE
        SET option = EXCLUDED.option, type = EXCLUDED.type, value = EXCLUDED.value
    RETURNING * INTO result;
    RETURN result;
END
$$;

COMMENT ON FUNCTION ipmanager.set_profile_option(text, text, text, text) IS
    'Sets (or replaces) DHCPv4 option (catalogue name or number) of the named profile to value; type only for numbers the catalogue does not know.';

CREATE FUNCTION ipmanager.unset_profile_option(profile text, option text)
    RETURNS boolean
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM ipmanager.profile_options o
        WHERE o.profile_id = ipmanager.profile_id(unset_profile_option.profile)
          AND (o.option = lower(btrim(unset_profile_option.option))
               OR o.number::text = btrim(unset_profile_option.option))
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

COMMENT ON FUNCTION ipmanager.unset_profile_option(text, text) IS
    'Removes option (name or number) from the named profile; false when it was not set.';

--------------------------------------------------------------------------------------------------
-- Audit and notification, as for the other tables
--------------------------------------------------------------------------------------------------

ALTER TABLE ipmanager.audit_log DROP CONSTRAINT audit_log_table_name_valid;
ALTER TABLE ipmanager.audit_log ADD CONSTRAINT audit_log_table_name_valid
    CHECK (table_name IN ('hosts', 'subnets', 'sites', 'profiles', 'subnet_options',
                          'profile_options', 'host_aliases'));
COMMENT ON COLUMN ipmanager.audit_log.table_name IS
    '''hosts'', ''subnets'', ''sites'', ''profiles'', ''subnet_options'', ''profile_options'' or ''host_aliases''.';

-- Removing a host, subnet or profile removes its aliases or options through the foreign key's
-- cascade (a host's move to another subnet moves its aliases), one statement per parent row.
-- Those statements are not logged or announced on their own: the parent's change is, and the
-- audit and notification triggers would otherwise run once per removed host. Hence the WHEN
-- condition on the three child tables: only statements that are not run by a trigger (the
-- foreign key's actions are triggers) fire them.
DO $$
DECLARE
    t    text;
    cond text;
BEGIN
    FOREACH t IN ARRAY ARRAY['profiles', 'subnet_options', 'profile_options', 'host_aliases'] LOOP
        cond := CASE WHEN t <> 'profiles' THEN 'WHEN (pg_trigger_depth() < 1)' ELSE '' END;
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
    END LOOP;
END
$$;

-- As V4's, for the new tables: rows with a subnet_id (hosts, subnet_options, host_aliases) name
-- their subnets' sites; a profile or its options may concern any subnet, so their payload is the
-- bare table name, which concerns every agent.
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
        IF TG_TABLE_NAME IN ('hosts', 'subnet_options', 'host_aliases') THEN
            touched := touched || ARRAY(SELECT s.site FROM ipmanager.subnets s
                                        WHERE s.id IN (SELECT n.subnet_id FROM new_rows n));
        ELSIF TG_TABLE_NAME = 'subnets' THEN
            touched := touched || ARRAY(SELECT DISTINCT n.site FROM new_rows n);
        ELSE
            touched := touched || ARRAY(SELECT n.name FROM new_rows n);
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF TG_TABLE_NAME IN ('hosts', 'subnet_options', 'host_aliases') THEN
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
    'Statement-level AFTER trigger on hosts, subnets, sites, subnet_options, host_aliases (''table:site site ...'', ''-'': no site) and profiles, profile_options (bare table name: every agent): NOTIFY ipmanager_site_changes.';

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
        WHEN audit_sites.table_name IN ('hosts', 'subnet_options', 'host_aliases') THEN ARRAY(
            SELECT s.site FROM ipmanager.subnets s
            WHERE s.id IN (SELECT (r ->> 'subnet_id')::bigint
                           FROM (VALUES (audit_sites.old), (audit_sites.new)) v(r)
                           WHERE r IS NOT NULL))
    END
$$;

COMMENT ON FUNCTION ipmanager.audit_sites(text, jsonb, jsonb) IS
    'The sites an audit_log row touches (NULL element: a subnet without site); NULL for profiles and their options, which concern every agent.';

-- As V4's: profiles concern every agent; with dns_scope 'all', so do aliases (names).
CREATE OR REPLACE FUNCTION ipmanager.agent_concerned(agent_sites text[], dns_scope text,
                                                     table_name text, change_sites text[])
    RETURNS boolean
    LANGUAGE sql
    IMMUTABLE PARALLEL SAFE
AS $$
    SELECT agent_sites IS NULL
        OR table_name IN ('profiles', 'profile_options')
        OR coalesce(change_sites && agent_sites, false)
        OR (dns_scope = 'all' AND table_name IN ('hosts', 'subnets', 'host_aliases'))
$$;

--------------------------------------------------------------------------------------------------
-- Privileges, as for subnets and hosts
--------------------------------------------------------------------------------------------------

GRANT SELECT ON ipmanager.dhcp_options, ipmanager.profiles, ipmanager.subnet_options,
                ipmanager.profile_options, ipmanager.host_aliases
    TO ipmanager_agent, ipmanager_admin;
GRANT INSERT, UPDATE, DELETE ON ipmanager.profiles, ipmanager.subnet_options,
                                ipmanager.profile_options, ipmanager.host_aliases
    TO ipmanager_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA ipmanager TO ipmanager_admin;

REVOKE ALL ON FUNCTION ipmanager.set_subnet_option(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.set_subnet_option(text, text, text, text) TO ipmanager_admin;
REVOKE ALL ON FUNCTION ipmanager.unset_subnet_option(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.unset_subnet_option(text, text) TO ipmanager_admin;
REVOKE ALL ON FUNCTION ipmanager.set_profile_option(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.set_profile_option(text, text, text, text) TO ipmanager_admin;
REVOKE ALL ON FUNCTION ipmanager.unset_profile_option(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.unset_profile_option(text, text) TO ipmanager_admin;
