-- Which wearers each registry version changed, so the running service re-reads only those
-- (ingest/registry_watch.py, registry/snapshot.py) instead of the whole registry at every
-- change: 4-9 s of a thread per enrolment at 100,000 wearers before this.
--
-- The statement triggers of 0011 bumped `registry_version` only. Now, on the four tables the
-- snapshot reads, one trigger per event (transition tables allow one event per trigger) bumps
-- the version and records the wearer ids the statement touched, old and new (a device moved
-- from one wearer to another changes both). TRUNCATE has no transition table: it records a
-- NULL wearer, "reload everything". `device_bindings` (history, not in the snapshot) keeps the
-- plain bump.
--
-- The log is complete for every version above `registry_version.changes_from`; the watcher
-- reloads whole when it last read an older version (a service down longer than the log is
-- kept, or the first read after this migration). Entries are pruned after a day.
CREATE TABLE IF NOT EXISTS registry_changes (
    version    bigint NOT NULL,
    wearer_id  text,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS registry_changes_version ON registry_changes (version);
ALTER TABLE registry_version ADD COLUMN IF NOT EXISTS changes_from bigint;
UPDATE registry_version SET changes_from = version WHERE changes_from IS NULL;
ALTER TABLE registry_version ALTER COLUMN changes_from SET NOT NULL;

CREATE OR REPLACE FUNCTION registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
    UPDATE registry_version SET version = version + 1 RETURNING version INTO v;
    IF TG_OP = 'TRUNCATE' AND TG_TABLE_NAME <> 'device_bindings' THEN
        INSERT INTO registry_changes (version, wearer_id) VALUES (v, NULL);
    END IF;
    PERFORM pg_notify('eldercare_registry', '');
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION registry_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
    UPDATE registry_version SET version = version + 1 RETURNING version INTO v;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO registry_changes (version, wearer_id)
            SELECT DISTINCT v, wearer_id FROM changed_new WHERE wearer_id IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO registry_changes (version, wearer_id)
            SELECT v, wearer_id FROM changed_old WHERE wearer_id IS NOT NULL
            UNION SELECT v, wearer_id FROM changed_new WHERE wearer_id IS NOT NULL;
    ELSE
        INSERT INTO registry_changes (version, wearer_id)
            SELECT DISTINCT v, wearer_id FROM changed_old WHERE wearer_id IS NOT NULL;
    END IF;
    PERFORM pg_notify('eldercare_registry', '');
    RETURN NULL;
END $$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['wearers', 'devices', 'contacts', 'geofences'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_registry_changed', t);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION registry_changed()',
                       t || '_registry_truncated', t);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS changed_new'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION registry_rows_changed()',
                       t || '_registry_inserted', t);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I'
                       ' REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION registry_rows_changed()',
                       t || '_registry_updated', t);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS changed_old'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION registry_rows_changed()',
                       t || '_registry_deleted', t);
    END LOOP;
END $$;
