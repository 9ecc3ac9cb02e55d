-- Taskforge schema, version 4: secrets, sealed by taskforge-core's vault
-- (XChaCha20-Poly1305 under a master key the store never sees).
--
-- One row per version of a name, kept as the vault sealed it. `name` is
-- compared byte by byte (COLLATE "C"), so the primary key lists names and
-- their versions in the order the contract gives them, whatever the
-- database's locale. A version is a u32, so it needs a bigint.
-- `created_ns` is the version's time exactly, as elsewhere in the schema
-- (nanoseconds since the Unix epoch); `created_at` is the same time to
-- the microsecond, for people and SQL.
CREATE TABLE secrets (
    name text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    key_id text NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL,
    created_ns bigint NOT NULL,
    PRIMARY KEY (name, version)
);
