-- Each access entry's own change time (issue 16, docs/domain.md rule 6): capture folds a user's
-- changes into one event at the commit time of the last one, so the conflict rule needs the
-- time each entry itself was granted or removed.
--   access_entry_times  one row per entry (user, company, application, kind, name) the store
--                       holds or has removed: present 1 = granted at changed_at (unix
--                       seconds, the change log's clock), 0 = removed at changed_at. Written by
--                       the triggers below in the statement that changes the entry; a grant
--                       again replaces its removal, a removed user's rows go with the user.
--                       Entries held before this migration have no row: capture then falls
--                       back to the event's time, as before.
CREATE TABLE access_entry_times (
    user_id     TEXT NOT NULL,
    company_id  TEXT NOT NULL,
    application TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    present     INTEGER NOT NULL,
    changed_at  REAL NOT NULL,
    PRIMARY KEY (user_id, company_id, application, kind, name)
);

CREATE TRIGGER access_times_ins AFTER INSERT ON access BEGIN
    INSERT OR REPLACE INTO access_entry_times VALUES (
        NEW.user_id, NEW.company_id, NEW.application, NEW.kind, NEW.name, 1,
        (julianday('now') - 2440587.5) * 86400.0);
END;
CREATE TRIGGER access_times_upd AFTER UPDATE OF user_id, company_id, application, kind, name ON access
WHEN OLD.user_id <> NEW.user_id OR OLD.company_id <> NEW.company_id OR OLD.application <> NEW.application
    OR OLD.kind <> NEW.kind OR OLD.name <> NEW.name
BEGIN
    INSERT OR REPLACE INTO access_entry_times VALUES (
        OLD.user_id, OLD.company_id, OLD.application, OLD.kind, OLD.name, 0,
        (julianday('now') - 2440587.5) * 86400.0);
    INSERT OR REPLACE INTO access_entry_times VALUES (
        NEW.user_id, NEW.company_id, NEW.application, NEW.kind, NEW.name, 1,
        (julianday('now') - 2440587.5) * 86400.0);
END;
CREATE TRIGGER access_times_del AFTER DELETE ON access BEGIN
    INSERT OR REPLACE INTO access_entry_times VALUES (
        OLD.user_id, OLD.company_id, OLD.application, OLD.kind, OLD.name, 0,
        (julianday('now') - 2440587.5) * 86400.0);
END;
CREATE TRIGGER access_times_user_del AFTER DELETE ON users BEGIN
    DELETE FROM access_entry_times WHERE user_id = OLD.id;
END;
