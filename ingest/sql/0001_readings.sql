-- Readings of every type except raw accelerometer chunks, one row per reading.
-- A wide table with nullable typed columns: NULLs cost one bit each in PostgreSQL, operators query
-- plain columns, and the dedup key is one index. See docs/schema.md.
CREATE TABLE IF NOT EXISTS readings (
    ts              timestamptz      NOT NULL,  -- when the device took the reading (device clock)
    device_id       text             NOT NULL,
    type            text             NOT NULL,  -- wire type: location, vitals, sos, fall, heartbeat, wear, home_alarm
    seq             bigint           NOT NULL DEFAULT -1,  -- device counter; -1 = the device sent none
    region          text             NOT NULL,  -- administrative area code from the topic
    received_at     timestamptz      NOT NULL,  -- when the service received the MQTT message
    lat             double precision,
    lon             double precision,
    accuracy_m      real,
    speed_mps       real,
    battery_pct     real,
    source          text,
    heart_rate_bpm  real,
    spo2_pct        real,
    body_temp_c     real,
    systolic_mmhg   real,
    diastolic_mmhg  real,
    steps           integer,
    confidence      real,
    rssi_dbm        real,
    worn            boolean,
    sensor          text,
    active          boolean
);
-- Redelivered QoS 1 messages must not create duplicate rows; this index also serves
-- "history of one device and type" queries. No other index on purpose: a (region, ts) index cost
-- 26% of write throughput in benchmarks/ingest.py, and per-region views read the device registry.
CREATE UNIQUE INDEX IF NOT EXISTS readings_dedup ON readings (device_id, type, ts, seq);

-- Raw accelerometer: one row per message with the samples as arrays (float4, g).
CREATE TABLE IF NOT EXISTS accel_chunks (
    ts           timestamptz NOT NULL,  -- first sample
    device_id    text        NOT NULL,
    seq          bigint      NOT NULL DEFAULT -1,
    region       text        NOT NULL,
    received_at  timestamptz NOT NULL,
    rate_hz      real        NOT NULL,
    n_samples    integer     NOT NULL,
    x            real[]      NOT NULL,
    y            real[]      NOT NULL,
    z            real[]      NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS accel_chunks_dedup ON accel_chunks (device_id, ts, seq);

-- Everything that broke the wire contract, with its raw bytes and the reason naming the field.
CREATE TABLE IF NOT EXISTS dead_letters (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text        NOT NULL,
    payload      bytea       NOT NULL,
    reason       text        NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_received_at ON dead_letters (received_at DESC);

-- Last known position of every device (plain SQL; works with or without TimescaleDB).
CREATE OR REPLACE VIEW device_last_position AS
SELECT DISTINCT ON (device_id)
       device_id, region, ts, lat, lon, accuracy_m, source
FROM readings
WHERE type = 'location'
ORDER BY device_id, ts DESC;
