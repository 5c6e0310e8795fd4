"""schemathesis hooks for tests/test_api_fuzz.py, loaded through ``SCHEMATHESIS_HOOKS``.

One hook, for one blind spot of schemathesis 4 (checked on 4.32.5): in negative mode it may put
a boolean or a number into a query parameter that takes a list of strings (``region=false``),
or a one-element list into one that takes a string (``after=[true]``). On the wire both are the
same text as a valid value (``?region=false``, ``?after=true``), which the server rightly
accepts; schemathesis re-reads scalar strings as sent before judging, but not list items, and
reports "schema-violating request accepted". :func:`filter_failure` drops exactly that report
when the query *as sent* is valid for every parameter, read the way the server reads it: lists
as all their values, other parameters as their single value (integers parsed), a repeated
single-valued parameter as invalid (the server answers 422). Every other failure stands.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema_rs
import schemathesis
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.core.parameters import ParameterLocation


@schemathesis.hook
def filter_failure(context: schemathesis.HookContext, failure: Failure,
                   case: schemathesis.Case[Any], response: schemathesis.Response) -> bool:
    """Keep every failure except an accepted "negative" query that is valid as sent."""
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
