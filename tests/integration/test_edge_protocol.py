"""Our subset of Envoy's external authorization API (``protos/envoy/``, compiled by our build) is
wire-compatible with Envoy's own: every message, field and enum value we declare is Envoy's, with
its number, type, cardinality and name, read from Envoy's generated descriptors (PyPI's
``xds-protos``) in a Python process of its own, since that package brings top-level ``google``
and ``opentelemetry`` packages that would shadow the ones the service runs on (``make install``
puts it in ``.venv/isolated/xds-protos``, never in the venv). That Envoy speaks to the service
through it is every test that goes through Envoy (the check answers each request)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import REPO

ISOLATED = Path(sys.prefix) / "isolated" / "xds-protos"

DESCRIBE = '''
import json, sys
from google.protobuf import descriptor_pool


def describe(names):
    """Each message's fields and each enum's values, for the full names given and all they use."""
    pool = descriptor_pool.Default()
    seen, out, todo = set(), {}, list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            message = pool.FindMessageTypeByName(name)
        except KeyError:
            enum = pool.FindEnumTypeByName(name)
            out[name] = {"values": {v.name: v.number for v in enum.values}}
            continue
        fields = {}
        for field in message.fields:
            kind = field.message_type or field.enum_type
            typename = kind.full_name if kind else ""
            fields[field.name] = [field.number, field.type, field.is_repeated, typename]
            if typename:
                todo.append(typename)
        oneofs = {o.name: sorted(f.name for f in o.fields) for o in message.oneofs}
        out[name] = {"fields": fields, "oneofs": oneofs}
    return out


def service(module, name):
    service = module.DESCRIPTOR.services_by_name[name]
    return {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods}
'''

ENVOYS = (
    DESCRIBE
    + """
from envoy.service.auth.v3 import external_auth_pb2
names = json.loads(sys.argv[1])
print(json.dumps({"types": describe(names), "service": service(external_auth_pb2, "Authorization")}))
"""
)


def ours() -> dict[str, Any]:
    from rerank.service.protocol import external_auth_pb2

    scope: dict[str, Any] = {}
    exec(DESCRIBE, scope)  # the same code as Envoy's side runs, on our descriptors
    names = [m.full_name for m in external_auth_pb2.DESCRIPTOR.message_types_by_name.values()]
    return {"types": scope["describe"](names), "service": scope["service"](external_auth_pb2, "Authorization")}


def envoys(names: list[str]) -> dict[str, Any]:
    assert (ISOLATED / "envoy").is_dir(), f"{ISOLATED} is missing: make install puts xds-protos there"
    env = {**os.environ, "PYTHONPATH": str(ISOLATED)}
    result = subprocess.run(
        [sys.executable, "-c", ENVOYS, json.dumps(names)],
        cwd="/",  # nothing of the checkout on the path: Envoy's packages only, and the runtime's
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout))


def test_our_subset_is_envoys_external_authorization_api() -> None:
    mine = ours()
    theirs = envoys(sorted(mine["types"]))
    assert (
        mine["service"]
        == theirs["service"]
        == {"Check": ["envoy.service.auth.v3.CheckRequest", "envoy.service.auth.v3.CheckResponse"]}
    )
    problems = []
    for name, ours_type in mine["types"].items():
        envoy_type = theirs["types"][name]
        for field, spec in ours_type.get("fields", {}).items():
            if envoy_type["fields"].get(field) != spec:
                problems.append(f"{name}.{field}: ours {spec}, Envoy's {envoy_type['fields'].get(field)}")
        for oneof, members in ours_type.get("oneofs", {}).items():
            if not set(members) <= set(envoy_type["oneofs"].get(oneof, [])):
                problems.append(f"{name} oneof {oneof}: ours {members}, Envoy's {envoy_type['oneofs'].get(oneof)}")
        for value, number in ours_type.get("values", {}).items():
            if envoy_type["values"].get(value) != number:
                problems.append(f"{name}.{value} = {number}, Envoy's {envoy_type['values'].get(value)}")
    assert not problems, "\n".join(problems)
    # Not vacuous: the request Envoy sends and the answer it reads, down to a header's value.
    assert {"envoy.service.auth.v3.AttributeContext.HttpRequest", "envoy.config.core.v3.HeaderValue"} <= set(
        mine["types"]
    )


def test_the_comparison_finds_a_difference() -> None:
    theirs = envoys(["envoy.config.core.v3.HeaderValue"])["types"]["envoy.config.core.v3.HeaderValue"]
    assert theirs["fields"]["key"][0] == 1 and theirs["fields"]["value"][0] == 2
    assert theirs["fields"]["value"] != [3, *theirs["fields"]["value"][1:]]  # what a renumbering would give


def test_the_protos_say_what_they_are() -> None:
    for proto in (REPO / "protos" / "envoy").rglob("*.proto"):
        assert "wire-compatible subset" in proto.read_text(), proto
