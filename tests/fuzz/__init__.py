"""Fuzzing every decoder and parser at eldercare's edges (issue #7, "Bad input").

Whatever arrives must be accepted or refused with a reason: never a crash, never a hang.

* ``test_decoder*``: ``MessageDecoder`` (MQTT payloads, JSON and MessagePack): arbitrary bytes
  and JSON, byte-level mutations of valid payloads, every field of every reading type replaced
  by a wrong type or an out-of-range value (derived from the schema with ``msgspec.inspect``, so
  a new field is fuzzed without editing these files), duplicate keys, topics of every wrong
  shape (unicode, wildcards), and explicit pathological payloads (10,000-deep nesting, 1e400,
  10**400, -0, 1e-400, NaN/Infinity, 10^6-element arrays, non-UTF-8, oversized). Invariants:
  something always comes out; reject reasons are non-empty text a dead-letter row can store;
  accepted readings carry the topic's device id, hold no NaN/inf, re-validate against the schema
  and lie in the clock window; decoding is deterministic.
* ``test_file_parsers``: the documents read through ``foundation.documents``, fed structural and
  textual mutations of the shipped examples, random documents and random bytes: only the
  documented error may escape ``parse_registry`` (RegistryError), ``parse_tokens``,
  ``parse_scenario``, ``load_policy`` and ``load_config`` (ConfigError); plus one regression
  test per crash this suite found, and the YAML alias bomb.
* ``test_line_readers``: ``read_recording``, ``load_labels`` and ``load_events`` (JSON Lines):
  a list or a ValidationError.
* ``test_ids``: ids, regions and names in every contract (topics, readings, registry, scenario,
  tokens, policy, console accounts) refuse a trailing newline, which a ``$`` anchor lets through.
* ``test_templates``: ``alerts.templates.render`` never raises on any JSON alert body.

Case budget. A *case* is one input run through a decoder or parser and checked; a full run
makes at least ``MIN_TOTAL_CASES`` (100,000). Hypothesis spends 0.7 ms per example on the
2-core machine this runs on before any work, and 5 ms drawing one nested JSON value, so
100,000 examples cannot fit in a minute and a half. The generators are therefore plain
functions of a ``random.Random``, and each example fans out: its first case draws from
``st.randoms()`` (every choice a hypothesis draw, so it shrinks), the others from
``st.randoms(use_true_random=True)`` (seeded by hypothesis: cheap, and a failure reproduces from
the seed and blob hypothesis prints; the failing input is in the assertion message). Every test
counts its cases (``budget.py``); ``test_zz_case_budget``, which runs last, prints the table and
fails if any test ran fewer than planned or the total drops below ``MIN_TOTAL_CASES``. Each
example has a hypothesis deadline (the hang guard; pytest-timeout backs it up) and the giant
explicit inputs assert their CPU time. No example database is written (``database=None``), so
runs stay private.

Bugs this suite finds and that are not fixed yet are listed in ``known_bugs.KNOWN_BUGS``, each
pinned by an ``xfail(strict=True)`` test with its smallest input. The property tests tolerate
(and count) exactly those signatures, so they keep hunting for new ones; when a bug is fixed its
xfail passes, which fails the run: then delete its entry and make the test a plain one.
"""
