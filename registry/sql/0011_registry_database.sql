-- The elderly information database (issue #12; docs/registry-database.md). The registry tables
-- were created by ingest's 0002 when a file was their only source; from here the registry
-- component owns them and staff edit them live through the API and console.

-- The region tree: national administrative division codes (2/4/6/9/12 digits), names in Chinese.
-- Topics, wearers and accounts may still name regions outside the tree (legacy codes): the tree
-- is what enrolment checks new records against, not a foreign key on old data.
CREATE TABLE IF NOT EXISTS regions (
    code        text PRIMARY KEY CHECK (code ~ '^([0-9]{2}|[0-9]{4}|[0-9]{6}|[0-9]{9}|[0-9]{12})$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    parent      text REFERENCES regions (code) ON DELETE RESTRICT,
    level       text NOT NULL CHECK (level IN ('province', 'city', 'district', 'street', 'community')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((level = 'province') = (parent IS NULL))
);
CREATE INDEX IF NOT EXISTS regions_parent ON regions (parent);

-- Wearers: the record staff keep. `active` false = deactivated (moved away, passed away): kept
-- with its history, out of admission, routing and detection. The ID-card number is never stored
-- in clear: an HMAC for lookup and duplicate checks, ciphertext for authorised export, and the
-- masked form the pages show.
ALTER TABLE wearers
    ADD COLUMN IF NOT EXISTS sex text CHECK (sex IN ('female', 'male')),
    ADD COLUMN IF NOT EXISTS birth_date date,
    ADD COLUMN IF NOT EXISTS address text,
    ADD COLUMN IF NOT EXISTS phone text,
    ADD COLUMN IF NOT EXISTS living_situation text
        CHECK (living_situation IN ('alone', 'empty_nest', 'with_family', 'care_home')),
    ADD COLUMN IF NOT EXISTS care_categories text[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS guardian_name text,
    ADD COLUMN IF NOT EXISTS guardian_phone text,
    ADD COLUMN IF NOT EXISTS guardian_relation text,
    ADD COLUMN IF NOT EXISTS notes text,
    ADD COLUMN IF NOT EXISTS id_card_hmac text,
    ADD COLUMN IF NOT EXISTS id_card_cipher text,
    ADD COLUMN IF NOT EXISTS id_card_masked text,
    ADD COLUMN IF NOT EXISTS active boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS deactivated_at timestamptz,
    ADD COLUMN IF NOT EXISTS deactivation_reason text
        CHECK (deactivation_reason IN ('moved_away', 'deceased', 'other')),
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
    -- Optimistic concurrency: an edit names the version it read (409 if somebody saved since).
    ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX IF NOT EXISTS wearers_id_card ON wearers (id_card_hmac)
    WHERE id_card_hmac IS NOT NULL AND active;
CREATE INDEX IF NOT EXISTS wearers_region ON wearers (region text_pattern_ops);
CREATE INDEX IF NOT EXISTS wearers_name ON wearers (name text_pattern_ops);

-- Devices exist on their own (stock handed out by a street office) and are bound to at most one
-- wearer at a time; `wearer_id` is the current binding, `device_bindings` the history.
ALTER TABLE devices
    ADD COLUMN IF NOT EXISTS imei text CHECK (imei ~ '^[0-9]{14,16}$'),
    ADD COLUMN IF NOT EXISTS protocol text CHECK (protocol IN ('mqtt', 'watch3g', 'gt06')),
    ADD COLUMN IF NOT EXISTS sim text,
    ADD COLUMN IF NOT EXISTS handed_out_on date,
    -- What the device's positions are in: most report WGS-84, some models GCJ-02 (ingest
    -- converts those to WGS-84 before storing and detection).
    ADD COLUMN IF NOT EXISTS coord_system text NOT NULL DEFAULT 'wgs84'
        CHECK (coord_system IN ('wgs84', 'gcj02')),
    ADD COLUMN IF NOT EXISTS retired_at timestamptz,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX IF NOT EXISTS devices_imei ON devices (imei) WHERE imei IS NOT NULL;
CREATE INDEX IF NOT EXISTS devices_region ON devices (region text_pattern_ops);

CREATE TABLE IF NOT EXISTS device_bindings (
    id            bigserial PRIMARY KEY,
    device_id     text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    wearer_id     text NOT NULL REFERENCES wearers (wearer_id) ON DELETE CASCADE,
    bound_at      timestamptz NOT NULL DEFAULT now(),
    bound_by      text NOT NULL,
    unbound_at    timestamptz,
    unbound_by    text,
    unbind_reason text,
    CHECK (unbound_at IS NULL OR unbound_at >= bound_at)
);
-- One open binding per device.
CREATE UNIQUE INDEX IF NOT EXISTS device_bindings_open ON device_bindings (device_id)
    WHERE unbound_at IS NULL;
CREATE INDEX IF NOT EXISTS device_bindings_wearer ON device_bindings (wearer_id);
INSERT INTO device_bindings (device_id, wearer_id, bound_at, bound_by)
    SELECT device_id, wearer_id, updated_at, 'system' FROM devices
    WHERE wearer_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM device_bindings b WHERE b.device_id = devices.device_id);

ALTER TABLE geofences ADD COLUMN IF NOT EXISTS name text;

-- Every change to the registry: who, when, before and after (JSON of the record). Append-only
-- like alert_audit; erasure (docs/privacy.md) replaces an erased wearer's entries through
-- registry_audit_erase(), the one path allowed to touch them.
CREATE TABLE IF NOT EXISTS registry_audit (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL,
    wearer_id  text,
    device_id  text,
    region     text,
    before     jsonb,
    after      jsonb
);
CREATE INDEX IF NOT EXISTS registry_audit_wearer ON registry_audit (wearer_id, id);
CREATE INDEX IF NOT EXISTS registry_audit_device ON registry_audit (device_id, id);
CREATE OR REPLACE FUNCTION registry_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('eldercare.erasing', true) = 'on' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'registry_audit is append-only (% refused)', TG_OP;
END $$;
DROP TRIGGER IF EXISTS registry_audit_append_only ON registry_audit;
CREATE TRIGGER registry_audit_append_only BEFORE UPDATE OR DELETE ON registry_audit
    FOR EACH ROW EXECUTE FUNCTION registry_audit_append_only();

-- Live effect: every statement that changes the registry bumps one counter and notifies; the
-- running service (ingest's registry watcher) reloads when the counter moves.
CREATE TABLE IF NOT EXISTS registry_version (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    version  bigint NOT NULL
);
INSERT INTO registry_version (one, version) VALUES (true, 1) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_version SET version = version + 1;
    PERFORM pg_notify('eldercare_registry', '');
    RETURN NULL;
END $$;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['wearers', 'devices', 'contacts', 'geofences', 'device_bindings'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_registry_changed', t);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION registry_changed()',
                       t || '_registry_changed', t);
    END LOOP;
END $$;
