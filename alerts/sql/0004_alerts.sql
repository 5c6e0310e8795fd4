-- Alerts (issue #5): what detection events become once a person must act on them.
-- One alert per (wearer, type) that is not resolved: repeated events update it. The database
-- enforces that (the partial unique index below), so concurrent workers cannot open duplicates.
CREATE TABLE IF NOT EXISTS alerts (
    id               bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject          text         NOT NULL,  -- wearer id, or 'device:<id>' for a device without one
    type             text         NOT NULL,  -- detection event type (docs/alerts.md)
    status           text         NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    severity         text         NOT NULL,
    priority         integer      NOT NULL,  -- 1 most urgent (docs/alerts.md)
    region           text         NOT NULL,
    device_id        text         NOT NULL,  -- the device of the latest event
    wearer_id        text,
    first_ts         timestamptz  NOT NULL,  -- device time of the first event
    last_ts          timestamptz  NOT NULL,  -- device time of the latest event
    event_count      integer      NOT NULL DEFAULT 1,
    lat              double precision,       -- latest known position
    lon              double precision,
    opened_at        timestamptz  NOT NULL,  -- service clock
    updated_at       timestamptz  NOT NULL,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_at      timestamptz,
    resolved_by      text,
    outcome          text
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_unresolved ON alerts (subject, type)
    WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_unresolved_by_priority ON alerts (priority, opened_at)
    WHERE status <> 'resolved';

-- Every step of every alert, append-only: the trigger refuses UPDATE and DELETE, so the trail
-- cannot be edited after the fact, even by a bug in this service.
CREATE TABLE IF NOT EXISTS alert_audit (
    id        bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint       NOT NULL REFERENCES alerts (id),
    at        timestamptz  NOT NULL,
    actor     text         NOT NULL,  -- 'system' or the user / platform that acted
    action    text         NOT NULL,  -- opened, updated, acknowledged, note, resolved
    detail    jsonb        NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alert_audit_alert ON alert_audit (alert_id, id);

CREATE OR REPLACE FUNCTION alert_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'alert_audit is append-only (% refused)', TG_OP;
END $$;
DROP TRIGGER IF EXISTS alert_audit_append_only ON alert_audit;
CREATE TRIGGER alert_audit_append_only BEFORE UPDATE OR DELETE ON alert_audit
    FOR EACH ROW EXECUTE FUNCTION alert_audit_append_only();
