-- Each access entry's own change time (issue 16, docs/domain.md rule 6; the same as
-- migrations/sqlite/0007_access_entry_times.sql): capture folds a user's changes into one
-- event at the commit time of the last one, so the conflict rule needs the time each entry
-- itself was granted or removed.
--   access_entry_times  one row per entry (user, company, application, kind, name) the store
--                       holds or has removed: present true = granted at changed_at (unix
--                       seconds, the change log's clock), false = removed at changed_at.
--                       Written by the statement triggers below, in the statement that
--                       changes the entry; a grant again replaces its removal, a removed
--                       user's rows go with the user. Entries held before this migration have
--                       no row: capture then falls back to the event's time, as before.
-- The triggers are named access_at_*: PostgreSQL fires a table's triggers in name order, so
-- these run before access_ins|upd|del and an entry's time is never after its change-log row's.
CREATE TABLE access_entry_times (
    user_id     TEXT NOT NULL,
    company_id  TEXT NOT NULL,
    application TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    present     BOOLEAN NOT NULL,
    changed_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, company_id, application, kind, name)
);

-- an UPDATE that keeps an entry's key changes nothing of it (only the keys it gives up or takes)
CREATE FUNCTION vud_access_entry_times() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    at DOUBLE PRECISION := extract(epoch FROM clock_timestamp());
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO access_entry_times
            SELECT n.user_id, n.company_id, n.application, n.kind, n.name, true, at FROM new_rows n
            ON CONFLICT (user_id, company_id, application, kind, name)
            DO UPDATE SET present = true, changed_at = excluded.changed_at;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO access_entry_times
            SELECT gone.*, false, at FROM (
                SELECT user_id, company_id, application, kind, name FROM old_rows
                EXCEPT SELECT user_id, company_id, application, kind, name FROM new_rows) gone
            UNION ALL
            SELECT came.*, true, at FROM (
                SELECT user_id, company_id, application, kind, name FROM new_rows
                EXCEPT SELECT user_id, company_id, application, kind, name FROM old_rows) came
            ON CONFLICT (user_id, company_id, application, kind, name)
            DO UPDATE SET present = excluded.present, changed_at = excluded.changed_at;
    ELSE
        INSERT INTO access_entry_times
            SELECT o.user_id, o.company_id, o.application, o.kind, o.name, false, at FROM old_rows o
            ON CONFLICT (user_id, company_id, application, kind, name)
            DO UPDATE SET present = false, changed_at = excluded.changed_at;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER access_at_ins AFTER INSERT ON access
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION vud_access_entry_times();
CREATE TRIGGER access_at_upd AFTER UPDATE ON access
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION vud_access_entry_times();
CREATE TRIGGER access_at_del AFTER DELETE ON access
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION vud_access_entry_times();

CREATE FUNCTION vud_access_entry_times_user_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM access_entry_times t USING old_rows o WHERE t.user_id = o.id;
    RETURN NULL;
END $$;
CREATE TRIGGER users_at_del AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION vud_access_entry_times_user_gone();
