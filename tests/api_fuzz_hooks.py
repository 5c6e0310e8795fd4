"""schemathesis hooks for tests/test_api_fuzz.py, loaded through ``SCHEMATHESIS_HOOKS``.

Two blind spots, one hook. The first: schemathesis 4 (checked on 4.32.5): in negative mode it may put
a boolean or a number into a query parameter that takes a list of strings (``region=false``),
or a one-element list into one that takes a string (``after=[true]``). On the wire both are the
same text as a valid value (``?region=false``, ``?after=true``), which the server rightly
accepts; schemathesis re-reads scalar strings as sent before judging, but not list items, and
reports "schema-violating request accepted". :func:`filter_failure` drops exactly that report
when the query *as sent* is valid for every parameter, read the way the server reads it: lists
as all their values, other parameters as their single value (integers parsed), a repeated
single-valued parameter as invalid (the server answers 422).

The second: "schema-valid request rejected" where the rule broken lies beyond what an OpenAPI
schema can say, and the 422 says which rule (issue #12): a record's phone number or ID-card
check digit (``detail`` items of type ``record_invalid``), a region tree file's lines (``problems``,
``PUT /regions``), a wearer list's cells (the import report, ``POST /imports/wearers``: any bytes
fit its schema). :func:`_rule_beyond_the_schema` drops exactly those answers; a 422 shaped as
FastAPI's own request validation still fails. Every other failure stands.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema_rs
import schemathesis
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.core.parameters import ParameterLocation
from schemathesis.openapi.checks import RejectedPositiveData


@schemathesis.hook
def filter_failure(context: schemathesis.HookContext, failure: Failure,
                   case: schemathesis.Case[Any], response: schemathesis.Response) -> bool:
    """Keep every failure except an accepted "negative" query that is valid as sent, and a
    schema-valid request refused for a rule the schema cannot state."""
    if isinstance(failure, RejectedPositiveData):
        return not _rule_beyond_the_schema(case, response)
    if not isinstance(failure, AcceptedNegativeData) or case.meta is None:
        return True
    others = (ParameterLocation.PATH, ParameterLocation.HEADER, ParameterLocation.COOKIE,
              ParameterLocation.BODY)
    if any(case.meta.is_negative_at(location) for location in others):
        return True
    return not _valid_as_sent(case, response)


def _valid_as_sent(case: schemathesis.Case[Any], response: schemathesis.Response) -> bool:
    url = response.request.url or ""
    sent = parse_qs(urlsplit(url).query, keep_blank_values=True)
    params = case.operation.get_parameter_set(ParameterLocation.QUERY).schema
    properties: dict[str, Any] = params.get("properties", {})
    read: dict[str, Any] = {}
    for name, texts in sent.items():
        schema = properties.get(name)
        if schema is None:
            continue                    # unknown parameters are ignored by the server
        if _allows(schema, "array"):
            read[name] = texts
        elif len(texts) > 1:
            return False                # the server answers 422 to a repeated one
        elif _allows(schema, "integer"):
            try:
                read[name] = int(texts[0])
            except ValueError:
                return False
        else:
            read[name] = texts[0]
    wire = {"type": "object", "properties": properties, "required": params.get("required", [])}
    try:
        return bool(jsonschema_rs.validator_for(wire).is_valid(read))
    except ValueError:   # a schema this hook cannot judge (jsonschema_rs): keep the failure
        return False


def _allows(schema: dict[str, Any], kind: str) -> bool:
    branches = schema.get("anyOf", [schema])
    return any(branch.get("type") == kind for branch in branches)


def _rule_beyond_the_schema(case: schemathesis.Case[Any], response: schemathesis.Response) -> bool:
    """A 422 that names a domain rule (docs/registry-database.md), not a schema mismatch."""
    if response.status_code != 422:
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    detail = body.get("detail")
    if isinstance(detail, list) and detail and all(
            isinstance(d, dict) and d.get("type") == "record_invalid" for d in detail):
        return True
    if case.method == "PUT" and case.path.endswith("/regions"):
        return isinstance(body.get("problems"), list) and bool(body["problems"])
    if case.method == "POST" and case.path.endswith("/imports/wearers"):
        return {"rows", "valid", "errors", "dry_run"} <= body.keys()
    return False
