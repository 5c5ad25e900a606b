-- Two-way access (issue 16): each access row says where it came from, and the change-log row
-- it causes says so too (the same as migrations/sqlite/0005_access_origin.sql).
--   access.origin      'directory': granted on premise (the default, and every existing row);
--                      'cloud': written by the directory sink because an administrator
--                      granted it in the cloud.
--   change_log.origin  'cloud' when every access row of the user the statement wrote is of
--                      origin cloud (the writeback's own write; also an on-premise deletion of
--                      such rows: a trigger cannot tell who deletes); 'directory' otherwise.
--   directory_operations_applied  the directory sink's applied operation ids, written in the
--                      same transaction as the operation's effect (idempotent apply).
ALTER TABLE access ADD COLUMN origin TEXT NOT NULL DEFAULT 'directory'
    CHECK (origin IN ('directory', 'cloud'));
ALTER TABLE change_log ADD COLUMN origin TEXT NOT NULL DEFAULT 'directory';

CREATE TABLE directory_operations_applied (
    operation_id TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    applied_at   DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
);

-- 'directory' > 'cloud': max() says 'directory' as soon as one row of the user is the directory's
CREATE OR REPLACE FUNCTION vud_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO change_log (entity, entity_id, op, origin)
            SELECT 'user', n.user_id, 'u', max(n.origin) FROM new_rows n GROUP BY n.user_id ORDER BY 2;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO change_log (entity, entity_id, op, origin)
            SELECT 'user', u.user_id, 'u', max(u.origin)
            FROM (SELECT user_id, origin FROM new_rows UNION ALL SELECT user_id, origin FROM old_rows) u
            GROUP BY u.user_id ORDER BY 2;
    ELSE
        INSERT INTO change_log (entity, entity_id, op, origin)
            SELECT 'user', o.user_id, 'u', max(o.origin) FROM old_rows o GROUP BY o.user_id ORDER BY 2;
    END IF;
    RETURN NULL;
END $$;
