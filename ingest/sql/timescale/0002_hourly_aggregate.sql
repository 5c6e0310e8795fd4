-- eldercare: no-transaction (continuous aggregates cannot be created inside a transaction)
-- Per device and hour: reading counts, last position, lowest battery, heart-rate range.
-- The console's device list and track views read this instead of raw rows.
CREATE MATERIALIZED VIEW IF NOT EXISTS device_hourly
WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket,
       device_id,
       count(*)                                  AS readings,
       count(*) FILTER (WHERE type = 'location') AS fixes,
       last(lat, ts) FILTER (WHERE type = 'location') AS last_lat,
       last(lon, ts) FILTER (WHERE type = 'location') AS last_lon,
       max(ts)                                   AS last_ts,
       min(battery_pct)                          AS min_battery_pct,
       min(heart_rate_bpm)                       AS min_heart_rate_bpm,
       max(heart_rate_bpm)                       AS max_heart_rate_bpm
FROM readings
GROUP BY bucket, device_id
WITH NO DATA;
