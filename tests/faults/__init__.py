"""Fault-injection suite (issue #7): the service under faults, against real Mosquitto and
PostgreSQL, with counts. The harness is ``tests/faults/harness.py``; ``scripts/reliability``
runs the suite and renders ``docs/reliability.md`` from what the tests record."""
