"""Alert lifecycle, routing and escalation (issue #5)."""
