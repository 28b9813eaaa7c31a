-- ipmanager HTTP API tokens (issue 14): who may do what through `ipmanager serve`, enforced by
-- the database, and an audit log that names the token's owner instead of the API's own login.
--
-- How this file is applied: like the earlier files (refinery in one transaction, or by hand with
-- psql -v ON_ERROR_STOP=1 -f ... after V1-V6), so no psql meta-commands, no BEGIN/COMMIT, every
-- object schema-qualified, PostgreSQL 13 or later.
--
-- The model
--   * ipmanager.api_tokens: one row per token: name, owner, access ('read' or 'write'), when it
--     was created and by whom, when it expires and when it was revoked. The token itself is never
--     stored, only its SHA-256: tokens are 256 random bits, so nobody can guess one from its
--     hash, and a slow password hash (argon2) would protect nothing more while costing every
--     request tens of milliseconds and making lookups by hash impossible. Revoked tokens stay,
--     and names are never reused, so the audit log's token names stay unambiguous.
--   * Roles (NOLOGIN, cluster-wide like ipmanager_agent/ipmanager_admin):
--       ipmanager_api_read   reads what the API shows (every table but the tokens, the views,
--                            change_applied/change_sites for ?wait) and changes nothing;
--       ipmanager_api_write  ipmanager_api_read plus ipmanager_admin: what the CLI may do;
--       ipmanager_api        the API server: grant it to the server's login
--                            (GRANT ipmanager_api TO ipmanager_api_login). It is NOINHERIT: the
--                            login holds no table privilege of its own and must SET LOCAL ROLE
--                            to the token's level in every transaction, so a request that skips
--                            that step can do nothing at all;
--       ipmanager_token_admin creates, lists and revokes tokens (`ipmanager token ...`). Not
--                            part of ipmanager_admin on purpose: whoever can create a token for
--                            any owner can act in that owner's name through the API.
--   * Per request, in its transaction, as the API login:
--       SELECT ipmanager.api_begin(<sha-256 of the token>);  -- verifies, remembers the token
--       SET LOCAL ROLE ipmanager_api_read | ipmanager_api_write;
--     api_begin stores the token's hash in the transaction-local setting ipmanager.api_token.
--   * audit_change (the audit trigger) records api_owner and api_token from that setting, but
--     only when the session's login (session_user, which SET ROLE does not change) is a member
--     of ipmanager_api, and only for a hash that belongs to a token. Anyone may set the setting
--     (custom settings have no privileges), so for a psql user it is ignored, and even the API
--     login can only name a token whose secret it was given.
--
-- SQLSTATEs raised here
--   28000 invalid_authorization_specification  api_begin: unknown, revoked or expired token
--   42501 insufficient_privilege                api_begin: the session is not the API's login
--   23514 check_violation                       api_tokens: invalid name, owner, access or hash
--   23505 unique_violation                      api_tokens: a token with that name exists
--   P0002 no_data_found                         revoke_api_token: no token of that name

--------------------------------------------------------------------------------------------------
-- Roles
--------------------------------------------------------------------------------------------------

-- As in V1: one block per role, each tolerating a concurrent migration of another database that
-- created the role first, the existence check first (CREATE ROLE needs CREATEROLE even for a role
-- that exists). Whoever creates a role also grants its memberships, which are cluster-wide too;
-- every migration creates the roles in the same order, so a second one waits for the first to
-- commit all of them. ipmanager_api is NOINHERIT so that its members (the API's login) hold no
-- privilege of ipmanager_api_read/_write until they SET ROLE to one.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ipmanager_api_read') THEN
        CREATE ROLE ipmanager_api_read NOLOGIN;
        COMMENT ON ROLE ipmanager_api_read IS
            'ipmanager HTTP API, read tokens: reads reservations, subnets, status and the audit log; changes nothing.';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ipmanager_api_write') THEN
        CREATE ROLE ipmanager_api_write NOLOGIN IN ROLE ipmanager_admin, ipmanager_api_read;
        COMMENT ON ROLE ipmanager_api_write IS
            'ipmanager HTTP API, write tokens: what ipmanager_admin may do.';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ipmanager_api') THEN
        CREATE ROLE ipmanager_api NOLOGIN NOINHERIT IN ROLE ipmanager_api_read, ipmanager_api_write;
        COMMENT ON ROLE ipmanager_api IS
            'The ipmanager API server: grant it to the server''s login. Holds no privileges of its own (NOINHERIT); each request sets the role of its token''s level.';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ipmanager_token_admin') THEN
        CREATE ROLE ipmanager_token_admin NOLOGIN;
        COMMENT ON ROLE ipmanager_token_admin IS
            'Creates, lists and revokes ipmanager API tokens.';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- Before the tokens table exists, so that "every table" does not include it. Later migrations
-- that add tables grant them to ipmanager_api_read themselves.
GRANT USAGE ON SCHEMA ipmanager TO ipmanager_api_read, ipmanager_api, ipmanager_token_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA ipmanager TO ipmanager_api_read;
GRANT EXECUTE ON FUNCTION ipmanager.change_applied(xid8), ipmanager.change_sites(xid8)
    TO ipmanager_api_read;

--------------------------------------------------------------------------------------------------
-- Tokens
--------------------------------------------------------------------------------------------------

CREATE TABLE ipmanager.api_tokens (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL
                            CONSTRAINT api_tokens_name_unique UNIQUE
                            CONSTRAINT api_tokens_name_valid
                            CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    owner       text        NOT NULL
                            CONSTRAINT api_tokens_owner_valid
                            CHECK (btrim(owner) = owner AND owner <> '' AND length(owner) <= 200),
    access      text        NOT NULL
                            CONSTRAINT api_tokens_access_valid CHECK (access IN ('read', 'write')),
    token_hash  bytea       NOT NULL
                            CONSTRAINT api_tokens_hash_unique UNIQUE
                            CONSTRAINT api_tokens_hash_valid CHECK (octet_length(token_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL DEFAULT session_user,
    expires_at  timestamptz,
    revoked_at  timestamptz
);

COMMENT ON TABLE ipmanager.api_tokens IS
    'HTTP API tokens; only their SHA-256 is stored. Only its owner (who runs the migrations) reads it; others use api_token_list and the functions below.';
COMMENT ON COLUMN ipmanager.api_tokens.name IS 'Unique, never reused (also after revocation): the audit log names tokens by it.';
COMMENT ON COLUMN ipmanager.api_tokens.owner IS 'The person or system the token was given to; the audit log records it as who made a change.';
COMMENT ON COLUMN ipmanager.api_tokens.access IS '''read'' (role ipmanager_api_read) or ''write'' (ipmanager_api_write).';
COMMENT ON COLUMN ipmanager.api_tokens.token_hash IS 'SHA-256 of the token as presented (Authorization: Bearer <token>).';
COMMENT ON COLUMN ipmanager.api_tokens.created_by IS 'The login that created the token (session_user).';
COMMENT ON COLUMN ipmanager.api_tokens.expires_at IS 'From then on the token is refused; NULL: never expires.';
COMMENT ON COLUMN ipmanager.api_tokens.revoked_at IS 'When the token was revoked; NULL: not revoked.';

REVOKE ALL ON ipmanager.api_tokens FROM PUBLIC;

CREATE VIEW ipmanager.api_token_list AS
SELECT t.id, t.name, t.owner, t.access, t.created_at, t.created_by, t.expires_at, t.revoked_at,
       CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked'
            WHEN t.expires_at <= now() THEN 'expired'
            ELSE 'valid' END AS state
FROM ipmanager.api_tokens t;

COMMENT ON VIEW ipmanager.api_token_list IS
    'api_tokens without the hashes, with each token''s state: ''valid'', ''expired'' or ''revoked''.';

REVOKE ALL ON ipmanager.api_token_list FROM PUBLIC;
GRANT SELECT ON ipmanager.api_token_list TO ipmanager_token_admin;

-- SECURITY DEFINER: token admins write api_tokens only through these functions, so created_by
-- is always the real login.
CREATE FUNCTION ipmanager.create_api_token(name text, owner text, access text, token_hash bytea,
                                           expires_at timestamptz DEFAULT NULL)
    RETURNS SETOF ipmanager.api_token_list
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO ipmanager.api_tokens (name, owner, access, token_hash, expires_at)
    VALUES (create_api_token.name, create_api_token.owner, create_api_token.access,
            create_api_token.token_hash, create_api_token.expires_at)
    RETURNING id INTO new_id;
    RETURN QUERY SELECT * FROM ipmanager.api_token_list l WHERE l.id = new_id;
END
$$;

COMMENT ON FUNCTION ipmanager.create_api_token(text, text, text, bytea, timestamptz) IS
    'Stores a new token (its SHA-256) under a new name for owner with access ''read'' or ''write'', expiring at expires_at (NULL: never); returns its api_token_list row.';

CREATE FUNCTION ipmanager.revoke_api_token(name text)
    RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ipmanager.api_tokens t WHERE t.name = revoke_api_token.name) THEN
        RAISE EXCEPTION 'api token % does not exist', quote_literal(revoke_api_token.name)
            USING ERRCODE = 'no_data_found', SCHEMA = 'ipmanager', TABLE = 'api_tokens',
                  COLUMN = 'name';
    END IF;
    UPDATE ipmanager.api_tokens t SET revoked_at = now()
    WHERE t.name = revoke_api_token.name AND t.revoked_at IS NULL;
    RETURN FOUND;
END
$$;

COMMENT ON FUNCTION ipmanager.revoke_api_token(text) IS
    'Revokes the named token from now on; false when it already was revoked. Raises no_data_found for an unknown name.';

-- What the API asks before a transaction: whose token this is and whether it is still valid
-- (the server answers 401 with the reason). Only for the API's login.
CREATE FUNCTION ipmanager.api_token_check(token_hash bytea)
    RETURNS TABLE (name text, owner text, access text, expires_at timestamptz,
                   revoked_at timestamptz, expired boolean)
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.name, t.owner, t.access, t.expires_at, t.revoked_at, t.expires_at <= now()
    FROM ipmanager.api_tokens t
    WHERE t.token_hash = api_token_check.token_hash
$$;

COMMENT ON FUNCTION ipmanager.api_token_check(bytea) IS
    'The token with this SHA-256 (no row: unknown), its access, and whether it is revoked or expired.';

-- The token a change is made with: only for the API's login and only a hash that is a token's.
-- A setting that is not 64 hex digits is no token (and must not break the change).
CREATE FUNCTION ipmanager.api_caller()
    RETURNS TABLE (name text, owner text)
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.name, t.owner
    FROM ipmanager.api_tokens t
    -- CASE, not AND: decode must only ever see 64 hex digits (AND may evaluate in any order).
    WHERE t.token_hash = CASE
        WHEN pg_has_role(session_user, 'ipmanager_api', 'MEMBER')
             AND current_setting('ipmanager.api_token', true) ~ '^[0-9a-f]{64}$'
        THEN decode(current_setting('ipmanager.api_token', true), 'hex')
    END
$$;

COMMENT ON FUNCTION ipmanager.api_caller() IS
    'The token (name, owner) the current transaction acts with: set by api_begin and honoured only when session_user is a member of ipmanager_api; no row otherwise.';

CREATE FUNCTION ipmanager.api_begin(token_hash bytea)
    RETURNS text
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t ipmanager.api_tokens;
BEGIN
    IF NOT pg_has_role(session_user, 'ipmanager_api', 'MEMBER') THEN
        RAISE EXCEPTION 'api_begin: % is not the API server''s login (a member of ipmanager_api)',
                session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO t FROM ipmanager.api_tokens a WHERE a.token_hash = api_begin.token_hash;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown API token' USING ERRCODE = 'invalid_authorization_specification';
    ELSIF t.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'API token % was revoked', quote_literal(t.name)
            USING ERRCODE = 'invalid_authorization_specification';
    ELSIF t.expires_at <= now() THEN
        RAISE EXCEPTION 'API token % has expired', quote_literal(t.name)
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    PERFORM set_config('ipmanager.api_token', encode(t.token_hash, 'hex'), true);
    RETURN t.access;
END
$$;

COMMENT ON FUNCTION ipmanager.api_begin(bytea) IS
    'For the API''s login, first in a request''s transaction: verifies the token with this SHA-256 (28000 when unknown, revoked or expired), makes the audit log name it for the rest of the transaction and returns its access; then SET LOCAL ROLE ipmanager_api_<access>.';

REVOKE ALL ON FUNCTION ipmanager.create_api_token(text, text, text, bytea, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.create_api_token(text, text, text, bytea, timestamptz)
    TO ipmanager_token_admin;
REVOKE ALL ON FUNCTION ipmanager.revoke_api_token(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.revoke_api_token(text) TO ipmanager_token_admin;
REVOKE ALL ON FUNCTION ipmanager.api_token_check(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.api_token_check(bytea) TO ipmanager_api;
REVOKE ALL ON FUNCTION ipmanager.api_begin(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipmanager.api_begin(bytea) TO ipmanager_api;
-- api_caller is called by the audit trigger, which runs as the owner; nobody else needs it.
REVOKE ALL ON FUNCTION ipmanager.api_caller() FROM PUBLIC;

--------------------------------------------------------------------------------------------------
-- The audit log names the token
--------------------------------------------------------------------------------------------------

ALTER TABLE ipmanager.audit_log
    ADD COLUMN api_owner text,
    ADD COLUMN api_token text;

COMMENT ON COLUMN ipmanager.audit_log.db_user IS
    'The login that made the change (session_user); for changes through the HTTP API the API server''s login, with api_owner and api_token saying whose token it was.';
COMMENT ON COLUMN ipmanager.audit_log.api_owner IS
    'Owner of the API token the change was made with (api_tokens.owner); NULL for changes not made through the API.';
COMMENT ON COLUMN ipmanager.audit_log.api_token IS
    'Name of the API token the change was made with (api_tokens.name); NULL for changes not made through the API.';

-- As V2's, with the token's owner and name.
CREATE OR REPLACE FUNCTION ipmanager.audit_change()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tok_owner text;
    tok_name  text;
BEGIN
    SELECT c.owner, c.name INTO tok_owner, tok_name FROM ipmanager.api_caller() c;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ipmanager.audit_log
            (db_user, application_name, client_addr, table_name, operation, row_id, new,
             api_owner, api_token)
        SELECT session_user, current_setting('application_name'), inet_client_addr(),
               TG_TABLE_NAME, 'INSERT', n.id, to_jsonb(n), tok_owner, tok_name
        FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO ipmanager.audit_log
            (db_user, application_name, client_addr, table_name, operation, row_id, old, new,
             api_owner, api_token)
        SELECT session_user, current_setting('application_name'), inet_client_addr(),
               TG_TABLE_NAME, 'UPDATE', coalesce(n.id, o.id), o.row, n.row, tok_owner, tok_name
        FROM (SELECT r.id, to_jsonb(r) AS row FROM old_rows r) o
        FULL JOIN (SELECT r.id, to_jsonb(r) AS row FROM new_rows r) n ON n.id = o.id
        WHERE (o.row - 'updated_at') IS DISTINCT FROM (n.row - 'updated_at');
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO ipmanager.audit_log
            (db_user, application_name, client_addr, table_name, operation, row_id, old,
             api_owner, api_token)
        SELECT session_user, current_setting('application_name'), inet_client_addr(),
               TG_TABLE_NAME, 'DELETE', o.id, to_jsonb(o), tok_owner, tok_name
        FROM old_rows o;
    ELSIF TG_OP = 'TRUNCATE' THEN
        EXECUTE format(
            'INSERT INTO ipmanager.audit_log
                 (db_user, application_name, client_addr, table_name, operation, row_id, old,
                  api_owner, api_token)
             SELECT session_user, current_setting(''application_name''), inet_client_addr(),
                    %L, ''TRUNCATE'', o.id, to_jsonb(o), $1, $2
             FROM %I.%I o',
            TG_TABLE_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME)
            USING tok_owner, tok_name;
    END IF;
    RETURN NULL;
END
$$;
