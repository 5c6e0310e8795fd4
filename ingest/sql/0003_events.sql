-- Detection events (issue #3): what the detectors concluded, one row per event identity.
-- (device_id, type, ts) is the identity: ts is the device time of the reading that triggered the
-- event, so a redelivered reading that triggers again hits the same row and raises no new alert.
CREATE TABLE IF NOT EXISTS detection_events (
    id           bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    text             NOT NULL,
    type         text             NOT NULL,  -- sos, fall, geofence_exit, ... (docs/detectors.md)
    ts           timestamptz      NOT NULL,
    severity     text             NOT NULL,  -- critical, high, medium, low, info
    region       text             NOT NULL,
    wearer_id    text,
    lat          double precision,
    lon          double precision,
    evidence     jsonb            NOT NULL DEFAULT '{}',
    detected_at  timestamptz      NOT NULL   -- service clock when the event was stored
);
CREATE UNIQUE INDEX IF NOT EXISTS detection_events_identity ON detection_events (device_id, type, ts);
CREATE INDEX IF NOT EXISTS detection_events_detected_at ON detection_events (detected_at DESC);
