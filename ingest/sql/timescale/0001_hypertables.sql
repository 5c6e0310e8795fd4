-- Applied only where the timescaledb extension is available (see docs/schema.md). The migration
-- runner creates the extension in a statement of its own first: its functions are not resolvable
-- later in the same multi-statement query string.
-- The dimension-builder form (TimescaleDB >= 2.13); the older positional form is deprecated.
SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'),
                         if_not_exists => true, migrate_data => true);
SELECT create_hypertable('accel_chunks', by_range('ts', INTERVAL '1 hour'),
                         if_not_exists => true, migrate_data => true);
-- Compression groups rows of one device and type: the dedup key stays enforceable
-- (segmentby + orderby cover it) and per-device history reads decompress one segment.
ALTER TABLE readings SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'device_id, type',
                          timescaledb.compress_orderby = 'ts DESC, seq');
ALTER TABLE accel_chunks SET (timescaledb.compress,
                              timescaledb.compress_segmentby = 'device_id',
                              timescaledb.compress_orderby = 'ts DESC, seq');
