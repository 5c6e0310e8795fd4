"""Simulated device fleets that publish the wire contract over MQTT."""
