-- Visma User Directory store (embedded default), with a change log written by triggers
-- in the same transaction as each change.

CREATE TABLE companies (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    organisation_number TEXT NOT NULL,
    country             TEXT NOT NULL DEFAULT 'NO',
    status              TEXT NOT NULL DEFAULT 'active'
);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    username   TEXT NOT NULL,
    email      TEXT NOT NULL,
    first_name TEXT NOT NULL DEFAULT '',
    last_name  TEXT NOT NULL DEFAULT '',
    language   TEXT NOT NULL DEFAULT 'nb',
    active     INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE roles (
    application TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (application, name)
);

CREATE TABLE layout_groups (
    application TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (application, name)
);

CREATE TABLE modules (
    application TEXT NOT NULL,
    code        TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (application, code)
);

-- No unique constraint on application: legacy stores may hold a second instance of a
-- type, which capture dead-letters instead of syncing.
CREATE TABLE application_instances (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    application TEXT NOT NULL,
    uri         TEXT NOT NULL,
    license_key TEXT NOT NULL
);

-- No foreign keys: capture validates references and dead-letters what does not resolve.
CREATE TABLE access (
    user_id     TEXT NOT NULL,
    company_id  TEXT NOT NULL,
    application TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('role', 'layout_group', 'module')),
    name        TEXT NOT NULL,
    PRIMARY KEY (user_id, company_id, application, kind, name)
);
CREATE INDEX access_by_company ON access (company_id);

CREATE TABLE change_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    entity       TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    op           TEXT NOT NULL CHECK (op IN ('c', 'u', 'd')),
    before       TEXT,
    committed_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

CREATE TABLE capture_checkpoint (
    name       TEXT PRIMARY KEY,
    phase      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    updated_at REAL NOT NULL
);

-- companies
CREATE TRIGGER companies_ins AFTER INSERT ON companies BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('company', NEW.id, 'c');
END;
CREATE TRIGGER companies_upd AFTER UPDATE ON companies BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('company', NEW.id, 'u');
    INSERT INTO change_log (entity, entity_id, op, before)
        SELECT 'company', OLD.id, 'd',
               json_object('id', OLD.id, 'name', OLD.name,
                           'organisation_number', OLD.organisation_number,
                           'country', OLD.country, 'status', OLD.status)
        WHERE OLD.id <> NEW.id;
END;
CREATE TRIGGER companies_del AFTER DELETE ON companies BEGIN
    INSERT INTO change_log (entity, entity_id, op, before) VALUES ('company', OLD.id, 'd',
        json_object('id', OLD.id, 'name', OLD.name, 'organisation_number', OLD.organisation_number,
                    'country', OLD.country, 'status', OLD.status));
END;

-- users
CREATE TRIGGER users_ins AFTER INSERT ON users BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('user', NEW.id, 'c');
END;
CREATE TRIGGER users_upd AFTER UPDATE ON users BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('user', NEW.id, 'u');
    INSERT INTO change_log (entity, entity_id, op, before)
        SELECT 'user', OLD.id, 'd',
               json_object('id', OLD.id, 'username', OLD.username, 'email', OLD.email,
                           'first_name', OLD.first_name, 'last_name', OLD.last_name,
                           'language', OLD.language, 'active', OLD.active)
        WHERE OLD.id <> NEW.id;
END;
CREATE TRIGGER users_del AFTER DELETE ON users BEGIN
    INSERT INTO change_log (entity, entity_id, op, before) VALUES ('user', OLD.id, 'd',
        json_object('id', OLD.id, 'username', OLD.username, 'email', OLD.email,
                    'first_name', OLD.first_name, 'last_name', OLD.last_name,
                    'language', OLD.language, 'active', OLD.active));
END;

-- access changes are changes of the user (a user event carries its complete access list)
CREATE TRIGGER access_ins AFTER INSERT ON access BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('user', NEW.user_id, 'u');
END;
CREATE TRIGGER access_upd AFTER UPDATE ON access BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('user', NEW.user_id, 'u');
    INSERT INTO change_log (entity, entity_id, op)
        SELECT 'user', OLD.user_id, 'u' WHERE OLD.user_id <> NEW.user_id;
END;
CREATE TRIGGER access_del AFTER DELETE ON access BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('user', OLD.user_id, 'u');
END;

-- roles: entity id = <application>:<name>
CREATE TRIGGER roles_ins AFTER INSERT ON roles BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('role', NEW.application || ':' || NEW.name, 'c');
END;
CREATE TRIGGER roles_upd AFTER UPDATE ON roles BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('role', NEW.application || ':' || NEW.name, 'u');
    INSERT INTO change_log (entity, entity_id, op, before)
        SELECT 'role', OLD.application || ':' || OLD.name, 'd', json_object('application', OLD.application, 'name', OLD.name, 'description', OLD.description)
        WHERE OLD.application <> NEW.application OR OLD.name <> NEW.name;
END;
CREATE TRIGGER roles_del AFTER DELETE ON roles BEGIN
    INSERT INTO change_log (entity, entity_id, op, before)
        VALUES ('role', OLD.application || ':' || OLD.name, 'd', json_object('application', OLD.application, 'name', OLD.name, 'description', OLD.description));
END;
-- layout_groups: entity id = <application>:<name>
CREATE TRIGGER layout_groups_ins AFTER INSERT ON layout_groups BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('layout_group', NEW.application || ':' || NEW.name, 'c');
END;
CREATE TRIGGER layout_groups_upd AFTER UPDATE ON layout_groups BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('layout_group', NEW.application || ':' || NEW.name, 'u');
    INSERT INTO change_log (entity, entity_id, op, before)
        SELECT 'layout_group', OLD.application || ':' || OLD.name, 'd', json_object('application', OLD.application, 'name', OLD.name, 'description', OLD.description)
        WHERE OLD.application <> NEW.application OR OLD.name <> NEW.name;
END;
CREATE TRIGGER layout_groups_del AFTER DELETE ON layout_groups BEGIN
    INSERT INTO change_log (entity, entity_id, op, before)
        VALUES ('layout_group', OLD.application || ':' || OLD.name, 'd', json_object('application', OLD.application, 'name', OLD.name, 'description', OLD.description));
END;
-- modules: entity id = <application>:<code>
CREATE TRIGGER modules_ins AFTER INSERT ON modules BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('module', NEW.application || ':' || NEW.code, 'c');
END;
CREATE TRIGGER modules_upd AFTER UPDATE ON modules BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('module', NEW.application || ':' || NEW.code, 'u');
    INSERT INTO change_log (entity, entity_id, op, before)
        SELECT 'module', OLD.application || ':' || OLD.code, 'd', json_object('application', OLD.application, 'code', OLD.code, 'name', OLD.name)
        WHERE OLD.application <> NEW.application OR OLD.code <> NEW.code;
END;
CREATE TRIGGER modules_del AFTER DELETE ON modules BEGIN
    INSERT INTO change_log (entity, entity_id, op, before)
        VALUES ('module', OLD.application || ':' || OLD.code, 'd', json_object('application', OLD.application, 'code', OLD.code, 'name', OLD.name));
END;
-- application instances: entity id = the application type (one instance per type).
-- The license key is never copied into the change log.
CREATE TRIGGER application_instances_ins AFTER INSERT ON application_instances BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('application_instance', NEW.application, 'c');
END;
CREATE TRIGGER application_instances_upd AFTER UPDATE ON application_instances BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('application_instance', NEW.application, 'u');
    INSERT INTO change_log (entity, entity_id, op)
        SELECT 'application_instance', OLD.application, 'u' WHERE OLD.application <> NEW.application;
END;
CREATE TRIGGER application_instances_del AFTER DELETE ON application_instances BEGIN
    INSERT INTO change_log (entity, entity_id, op, before) VALUES ('application_instance', OLD.application, 'd',
        json_object('application', OLD.application, 'uri', OLD.uri));
END;
