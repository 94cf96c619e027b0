-- shroud database schema, version 3.
--
-- This file is the whole schema: store/ applies it to an empty database and PRAGMA user_version
-- numbers it (store/store.h: STORE_SCHEMA_VERSION). An older file is migrated forward by the
-- steps in store/store.c (migrations[]); a file written by a newer shroud is refused.
--
-- No table holds destinations (DESIGN.md, "Privacy rules").

-- Users that may authenticate with RFC 1929 username/password.
-- name: 1..64 of [A-Za-z0-9_.], starting with a letter or digit; never '-', which separates the
-- name from its parameters in a SOCKS username ("alice-session-s1").
CREATE TABLE users (
    name     TEXT    NOT NULL PRIMARY KEY
                     CHECK (length(name) BETWEEN 1 AND 64
                            AND name NOT GLOB '*[^A-Za-z0-9_.]*'
                            AND substr(name, 1, 1) GLOB '[A-Za-z0-9]'),
    hash     TEXT    NOT NULL CHECK (hash GLOB '$argon2id$*'),  -- crypto_pwhash_str output
    enabled  INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created  INTEGER NOT NULL                                   -- Unix seconds
) STRICT;

-- Daemon-wide settings as key/value text (sticky TTL, secrets, ...: each owner documents its key).
CREATE TABLE settings (
    key    TEXT NOT NULL PRIMARY KEY,
    value  TEXT NOT NULL
) STRICT;


-- The egress pool: source addresses outgoing connections leave from (DESIGN.md, step 6).
-- address: canonical text (inet_ntop); an IPv6 prefix entry carries its length: "2001:db8:1::/64".
-- prefix:  32 (IPv4) or 128 (IPv6) for one address; 32..127 for an IPv6 prefix, from which each
--          sticky key draws its own address.
CREATE TABLE pool (
    id       INTEGER PRIMARY KEY,
    address  TEXT    NOT NULL UNIQUE,
    family   INTEGER NOT NULL CHECK (family IN (4, 6)),
    prefix   INTEGER NOT NULL CHECK ((family = 4 AND prefix = 32)
                                     OR (family = 6 AND prefix BETWEEN 32 AND 128)),
    weight   INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000000),
    enabled  INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    note     TEXT    NOT NULL DEFAULT '',
    added    INTEGER NOT NULL                                    -- Unix seconds
) STRICT;

-- key=value tags of pool entries (country=de, kind=residential); one value per key.
CREATE TABLE pool_tags (
    pool_id  INTEGER NOT NULL REFERENCES pool (id) ON DELETE CASCADE,
    key      TEXT    NOT NULL CHECK (length(key) BETWEEN 1 AND 32 AND key NOT GLOB '*[^a-z0-9_.]*'),
    value    TEXT    NOT NULL CHECK (length(value) BETWEEN 1 AND 32
                                     AND value NOT GLOB '*[^A-Za-z0-9_.]*'),
    PRIMARY KEY (pool_id, key)
) STRICT;

-- Health, written by the daemon only: an entry whose bind failed (address not on this host) or
-- whose route was unreachable cools down, with exponential back-off, and comes back by itself.
CREATE TABLE pool_health (
    pool_id         INTEGER NOT NULL PRIMARY KEY REFERENCES pool (id) ON DELETE CASCADE,
    cooldown_until  INTEGER NOT NULL,      -- Unix seconds; in the past = healthy
    failures        INTEGER NOT NULL       -- consecutive failures: the back-off exponent
) STRICT;

-- Usage per egress address and per user per UTC day, added in batches by the daemon every few
-- seconds, never per connection. Rows outlive pool entries and users (history); no destination.
-- connections counts TCP streams and UDP associations; datagrams counts UDP datagrams relayed
-- (their payload bytes are in bytes_up / bytes_down).
CREATE TABLE usage_egress (
    day          TEXT    NOT NULL,         -- 'YYYY-MM-DD', UTC
    address      TEXT    NOT NULL,         -- pool.address at the time ('' = system default address)
    connections  INTEGER NOT NULL DEFAULT 0,
    bytes_up     INTEGER NOT NULL DEFAULT 0,   -- client -> target
    bytes_down   INTEGER NOT NULL DEFAULT 0,   -- target -> client
    failures     INTEGER NOT NULL DEFAULT 0,
    datagrams    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, address)
) STRICT;

CREATE TABLE usage_user (
    day          TEXT    NOT NULL,
    user         TEXT    NOT NULL,         -- users.name ('' = no authentication)
    connections  INTEGER NOT NULL DEFAULT 0,
    bytes_up     INTEGER NOT NULL DEFAULT 0,
    bytes_down   INTEGER NOT NULL DEFAULT 0,
    failures     INTEGER NOT NULL DEFAULT 0,
    datagrams    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user)
) STRICT;

-- Clients of the encrypted link (LINK.md): a static X25519 public key and a 32-byte PSK each, acting
-- as one user (its parameters come from the client's SOCKS username). Removing the user removes its
-- links. name: the same rule as users.name.
CREATE TABLE links (
    name        TEXT    NOT NULL PRIMARY KEY
                        CHECK (length(name) BETWEEN 1 AND 64
                               AND name NOT GLOB '*[^A-Za-z0-9_.]*'
                               AND substr(name, 1, 1) GLOB '[A-Za-z0-9]'),
    user        TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    public_key  BLOB    NOT NULL UNIQUE CHECK (length(public_key) = 32),
    psk         BLOB    NOT NULL CHECK (length(psk) = 32),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created     INTEGER NOT NULL                                 -- Unix seconds
) STRICT;

-- Settings used so far (key: meaning, default):
--   sticky_salt  64 hex digits: the secret key of sticky hashing, made by 'serve' at first start
--   sticky_ttl   seconds a (user, session, site) keeps its source address: 600
--   link_server_key  64 hex digits: the link server's static X25519 private key, made at first use

PRAGMA user_version = 3;
