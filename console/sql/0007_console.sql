-- Duty console accounts and sessions (issue #6; console/accounts.py, docs in its docstring).
--
-- Passwords are stored only as argon2id hashes: the CHECK refuses anything else, so a bug that
-- tried to store a plaintext password fails loudly instead of leaking it. ``regions`` is a list
-- of region codes, or {'*'} for every region (as in the API tokens file). 'system' is the
-- service's own audit actor and cannot be a username.
CREATE TABLE IF NOT EXISTS console_users (
    username       text         PRIMARY KEY
        CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$' AND username <> 'system'),
    display_name   text,
    password_hash  text         NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    role           text         NOT NULL CHECK (role IN ('officer', 'supervisor', 'admin')),
    regions        text[]       NOT NULL CHECK (cardinality(regions) >= 1),
    language       text         NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
    disabled       boolean      NOT NULL DEFAULT false,
    created_at     timestamptz  NOT NULL DEFAULT now()
);

-- One row per logged-in browser. The session token itself is never stored, only its SHA-256
-- (a database dump grants no session). The CSRF token is stored as is: it is worthless without
-- the session cookie, and the console reads it back after a page reload (GET /console/me).
-- Deleting or disabling a user removes their sessions.
CREATE TABLE IF NOT EXISTS console_sessions (
    id_sha256     text         PRIMARY KEY CHECK (id_sha256 ~ '^[0-9a-f]{64}$'),
    username      text         NOT NULL REFERENCES console_users (username) ON DELETE CASCADE,
    csrf_token    text         NOT NULL,
    created_at    timestamptz  NOT NULL,
    last_seen_at  timestamptz  NOT NULL,
    expires_at    timestamptz  NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_username ON console_sessions (username);
CREATE INDEX IF NOT EXISTS console_sessions_expires ON console_sessions (expires_at);
