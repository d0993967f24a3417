-- Revoked tokens and users (access control). kind: 'token' (value = jti) or 'user' (value = sub).
-- Kept until lifted, so a restart does not re-admit a revoked token before it expires.
CREATE TABLE revocations (
    kind        TEXT        NOT NULL CHECK (kind IN ('token', 'user')),
    value       TEXT        NOT NULL,
    revoked_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, value)
);
