-- shroud database schema, version 1.
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

PRAGMA user_version = 1;
