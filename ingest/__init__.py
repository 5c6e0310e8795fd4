"""MQTT to PostgreSQL/TimescaleDB: receive, validate, batch, store, then acknowledge."""
