"""The foundation every eldercare component stands on, and which imports none of them.

One concept per module: ``errors`` (the one exception tree), ``clock`` (time as an input),
``supervisor`` (supervised worker threads), ``lifecycle`` (``with`` for what starts and
stops), ``worker`` (the loop every background worker runs), ``database`` (the ``[database]`` section and the readiness query), ``migrations``
(versioned SQL of every component, applied in one order), ``pool`` (a lazily opened
PostgreSQL pool), ``documents`` (YAML/JSON/TOML files into typed structs, with limits),
``tls``, ``broker`` (the ``[mqtt]`` section, where the broker is and how every client
connects and reconnects), ``http_server`` (uvicorn in a named thread) and ``loop_thread``
(an asyncio loop in a named thread).
The layering rule (docs/architecture.md): nothing here imports another package of the project.
"""

#: The release, for User-Agent headers and reports (the same as the package metadata).
__version__ = "0.1.0"
