-- Applied only where the timescaledb extension is available (see docs/schema.md).
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('accel_chunks', 'ts', chunk_time_interval => INTERVAL '1 hour',
                         migrate_data => true, if_not_exists => true);
-- Compression groups rows of one device and type: the dedup key stays enforceable
-- (segmentby + orderby cover it) and per-device history reads decompress one segment.
ALTER TABLE readings SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'device_id, type',
                          timescaledb.compress_orderby = 'ts DESC, seq');
ALTER TABLE accel_chunks SET (timescaledb.compress,
                              timescaledb.compress_segmentby = 'device_id',
                              timescaledb.compress_orderby = 'ts DESC, seq');
