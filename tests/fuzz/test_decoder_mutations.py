"""Fuzzing ``MessageDecoder`` with mutated payloads and topics of every wrong shape.

Valid payloads with bytes flipped, cut, repeated or spliced with nasty tokens (as atheris's
mutator makes them, without its coverage guidance); topics with unicode, wildcards, empty and
extra levels, NUL, trailing newlines and 10 KB segments, checked against an independent regex.
"""

from __future__ import annotations

import random
import re
from typing import Final

from hypothesis import example
from hypothesis import strategies as st

from tests.fuzz.budget import fuzz, randoms
from tests.fuzz.values import (
    JSON_TYPES,
    MSGPACK_TYPES,
    TOKENS,
    encodings,
    mutate_bytes,
    r_id,
    r_text,
    to_json,
)
from tests.fuzz.wire import DEV, DEV_ID, GW, NOW, REGION, framings, r_doc, run_decode

# Deliberately not built from schemas.readings' patterns: an independent oracle, and fullmatch
# (a `$` there would share the bug it is meant to catch).
_TOPIC_ORACLE: Final = re.compile(r"eldercare/v1/[a-z0-9-]{1,32}/(dev|gw)/[A-Za-z0-9_.:-]{1,64}")


# -- mutated payloads ---------------------------------------------------------------------------
MUTANTS: Final = 80


@fuzz(500, cases=500 * MUTANTS, **randoms)
def test_decode_mutated_payloads(drawn: random.Random, rng: random.Random) -> None:
    """Valid payloads (drawn, so they shrink) with bytes flipped, cut, repeated or spliced with
    nasty tokens, sent with their own content type and now and then another."""
    docs = [r_doc(drawn) for _ in range(drawn.randint(1, 3))]
    seeds = [(framing.topic, payload, ct)
             for framing in framings(docs, r_id(drawn), names_itself=False)
             for payload, ct in encodings(framing.payload_object(), drawn.randrange(6))]
    for i in range(MUTANTS):
        r = drawn if i == 0 else rng
        topic, payload, ct = r.choice(seeds)
        if r.random() < 0.1:
            ct = r.choice([*JSON_TYPES, *MSGPACK_TYPES])
        run_decode(topic, mutate_bytes(r, payload, TOKENS), ct)


# -- topics -------------------------------------------------------------------------------------
SEGMENTS: Final = ("+", "#", "", " ", REGION, DEV_ID, "dev", "gw", "DEV", "济南", "ＢＲ－１",
                   "\x00", "$SYS", "a" * 33, "a" * 65, "A" * 64, "BR-1\t", "371002 ", "BR-1\n",
                   "371002\n", "BR-1\r\n", "r-1", "a/b", "eldercare", "v1")
topics = st.one_of(
    st.tuples(st.sampled_from(SEGMENTS) | st.text(max_size=40),
              st.sampled_from(["dev", "gw", "DEV", "gateway", "+", "#"]),
              st.sampled_from(SEGMENTS) | st.text(max_size=70),
              ).map(lambda p: f"eldercare/v1/{p[0]}/{p[1]}/{p[2]}"),
    st.text(max_size=100),
    st.builds(lambda t, s: t + s, st.sampled_from([DEV, GW]), st.text(max_size=5)),
)


def r_topic(rng: random.Random) -> str:
    """A topic near the v1 forms: segments valid, nasty or random, sometimes too many."""
    def segment() -> str:
        roll = rng.randrange(3)
        return (rng.choice(SEGMENTS) if roll == 0 else r_id(rng) if roll == 1
                else r_text(rng, 20))
    parts = ["eldercare", "v1", segment(), rng.choice(("dev", "gw", segment())), segment()]
    if rng.random() < 0.2:
        parts = [segment() for _ in range(rng.randint(0, 7))]
    return "/".join(parts)


def topic_cases(topic: str) -> None:
    """A reading on ``topic`` (alone and in an array): accepted exactly when the topic is of a
    v1 form (checked with an independent regex), and then carrying the topic's id."""
    source = topic.rsplit("/", 1)[-1]
    single = run_decode(topic, to_json({"type": "sos", "ts": NOW}))
    batch = run_decode(topic, to_json([{"type": "sos", "ts": NOW, "device_id": source}]))
    match = _TOPIC_ORACLE.fullmatch(topic)
    if match is None:
        for out in (single, batch):
            assert out.topic is None and out.rejects[0].reason.startswith("topic"), topic
        return
    assert [r.device_id for r in batch.readings] == [source], topic
    if match.group(1) == "dev":
        assert [r.device_id for r in single.readings] == [source], topic
    else:  # an object on a gateway topic: this SOS names no device, so none keeps it
        assert not single.readings and len(single.rejects) == 1
        assert single.rejects[0].reason.startswith(
            "gateway payload must be an array of readings; "), single.rejects


@example(topic="eldercare/v1/+/dev/#", rng=random.Random(0))
@example(topic="#", rng=random.Random(0))
@example(topic="eldercare/v1/371002/dev/BR-1/extra", rng=random.Random(0))
@example(topic="eldercare/v1/" + "9" * 10_000 + "/dev/x", rng=random.Random(0))
@fuzz(700, cases=700 * 10, topic=topics, rng=randoms["rng"])
def test_decode_topics(topic: str, rng: random.Random) -> None:
    """Topics of every wrong shape: unicode, wildcards, empty and extra levels, NUL, 10 KB."""
    topic_cases(topic)
    for _ in range(4):
        topic_cases(r_topic(rng))

