-- Device registry: wearers, their devices, contacts and safe zones. Loaded from the registry file
-- (docs/registry.md) by `eldercare registry load` or at start-up; the file is the source of truth.
CREATE TABLE IF NOT EXISTS wearers (
    wearer_id   text PRIMARY KEY,
    name        text NOT NULL,
    region      text NOT NULL,
    birth_year  integer,
    conditions  text[] NOT NULL DEFAULT '{}',
    timezone    text NOT NULL DEFAULT 'Asia/Shanghai',
    home_lat    double precision,
    home_lon    double precision,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS devices (
    device_id   text PRIMARY KEY,
    wearer_id   text REFERENCES wearers (wearer_id) ON DELETE SET NULL,
    kind        text NOT NULL,   -- bracelet, watch, fall_sensor, home_sensor, gateway
    region      text NOT NULL,
    model       text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS devices_wearer ON devices (wearer_id);

CREATE TABLE IF NOT EXISTS contacts (
    wearer_id   text NOT NULL REFERENCES wearers (wearer_id) ON DELETE CASCADE,
    priority    integer NOT NULL,  -- 1 = called first
    name        text NOT NULL,
    relation    text,
    phone       text NOT NULL,
    PRIMARY KEY (wearer_id, priority)
);

CREATE TABLE IF NOT EXISTS geofences (
    wearer_id   text NOT NULL REFERENCES wearers (wearer_id) ON DELETE CASCADE,
    zone_id     text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('circle', 'polygon')),
    center_lat  double precision,
    center_lon  double precision,
    radius_m    double precision,
    polygon     jsonb,            -- [[lat, lon], ...] for polygons
    active_from time,             -- local time window (wearer's timezone); NULL = always
    active_to   time,
    PRIMARY KEY (wearer_id, zone_id)
);
