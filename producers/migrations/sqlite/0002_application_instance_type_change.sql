-- An application instance that changes its type (UPDATE ... SET application) must log the
-- old type as 'd' with its last known state, as the PostgreSQL trigger does: capture then
-- emits a delete of the old type if no instance of it is left (else an update of the
-- remaining one). 0001 logged the old type as 'u' without a before image, so capture found
-- no row and no delete: the old type's event never said it was gone.
-- The new type is logged 'u' first, then the old type 'd' (the order PostgreSQL writes them).
DROP TRIGGER application_instances_upd;
CREATE TRIGGER application_instances_upd AFTER UPDATE ON application_instances BEGIN
    INSERT INTO change_log (entity, entity_id, op) VALUES ('application_instance', NEW.application, 'u');
    INSERT INTO change_log (entity, entity_id, op, before)
        SELECT 'application_instance', OLD.application, 'd', json_object('application', OLD.application, 'uri', OLD.uri)
        WHERE OLD.application <> NEW.application;
END;
