-- Two-way access (issue 16): each access row says where it came from, and the change-log row
-- it causes says so too.
--   access.origin      'directory': granted on premise (the default, and every existing row);
--                      'cloud': written by the directory sink (vudsync run directory-sink)
--                      because an administrator granted it in the cloud.
--   change_log.origin  the origin of the access row whose change logged it ('cloud': the
--                      writeback's own write, which capture must not echo back to the cloud;
--                      also an on-premise deletion of such a row, which carries the deleted
--                      row's origin: a trigger cannot tell who deletes); 'directory' otherwise.
--   directory_operations_applied  the directory sink's applied operation ids, written in the
--                      same transaction as the operation's effect (idempotent apply).
ALTER TABLE access ADD COLUMN origin TEXT NOT NULL DEFAULT 'directory'
    CHECK (origin IN ('directory', 'cloud'));
ALTER TABLE change_log ADD COLUMN origin TEXT NOT NULL DEFAULT 'directory';

CREATE TABLE directory_operations_applied (
    operation_id TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    applied_at   REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

DROP TRIGGER access_ins;
DROP TRIGGER access_upd;
DROP TRIGGER access_del;
CREATE TRIGGER access_ins AFTER INSERT ON access BEGIN
    INSERT INTO change_log (entity, entity_id, op, origin) VALUES ('user', NEW.user_id, 'u', NEW.origin);
END;
CREATE TRIGGER access_upd AFTER UPDATE ON access BEGIN
    INSERT INTO change_log (entity, entity_id, op, origin) VALUES ('user', NEW.user_id, 'u', NEW.origin);
    INSERT INTO change_log (entity, entity_id, op, origin)
        SELECT 'user', OLD.user_id, 'u', OLD.origin WHERE OLD.user_id <> NEW.user_id;
END;
CREATE TRIGGER access_del AFTER DELETE ON access BEGIN
    INSERT INTO change_log (entity, entity_id, op, origin) VALUES ('user', OLD.user_id, 'u', OLD.origin);
END;
