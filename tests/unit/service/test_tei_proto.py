"""Our ``tei.v1`` proto declares exactly what TEI publishes for Info and Rerank, plus our one
extension (``instruction`` on the rerank requests) under a field number TEI does not use.

The reference is the stubs that ``tei-client`` generated from TEI's own ``proto/tei.proto``
(an independent copy: we never generate them); ours is read from the descriptor set the build
step wrote, without registering it in any pool (both declare ``tei.v1``)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

from rerank.gateway.descriptor import descriptor_set


def ours() -> descriptor_pb2.FileDescriptorProto:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set().read_bytes()).file
    return next(f for f in files if f.name == "tei/v1/tei.proto")


def upstream() -> descriptor_pb2.FileDescriptorProto:
    """tei-client's generated ``tei_pb2``, read without importing it: importing would register
    ``tei.v1`` in protobuf's default pool, where ours already is in a full test run."""
    import ast
    import importlib.util

    # The top-level package only: finding a submodule would import the package, and its
    # __init__ imports the stubs.
    spec = importlib.util.find_spec("tei_client")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).parent / "stubs" / "tei_pb2.py"
    tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            serialized = node.args[0]
            assert isinstance(serialized, ast.Constant) and isinstance(serialized.value, bytes)
            return descriptor_pb2.FileDescriptorProto.FromString(serialized.value)
    raise AssertionError(f"{source} has no serialized descriptor")


EXTENSIONS = {"RerankRequest": "instruction", "RerankStreamRequest": "instruction"}
"""Our fields that TEI's proto lacks, by message."""
EXTENSION_NUMBER = 1001


def _fields(message: descriptor_pb2.DescriptorProto) -> list[tuple[str, int, int, int, str, bool]]:
    return [
        (f.name, f.number, f.type, f.label, f.type_name, f.proto3_optional)
        for f in message.field
        if f.name != EXTENSIONS.get(message.name)
    ]


def test_the_extension_is_an_optional_string_under_a_number_tei_does_not_use():
    mine = {m.name: m for m in ours().message_type}
    theirs = {m.name: m for m in upstream().message_type}
    for name, field_name in EXTENSIONS.items():
        (field,) = [f for f in mine[name].field if f.name == field_name]
        assert (field.number, field.type, field.proto3_optional) == (EXTENSION_NUMBER, field.TYPE_STRING, True)
        assert EXTENSION_NUMBER not in {f.number for f in theirs[name].field}


def test_package_services_messages_and_enums_match_tei():
    mine, theirs = ours(), upstream()
    assert mine.package == theirs.package == "tei.v1"
    their_messages = {m.name: m for m in theirs.message_type}
    for message in mine.message_type:
        assert _fields(message) == _fields(their_messages[message.name]), message.name
    their_enums = {e.name: [(v.name, v.number) for v in e.value] for e in theirs.enum_type}
    for enum in mine.enum_type:
        assert [(v.name, v.number) for v in enum.value] == their_enums[enum.name]
    their_services = {s.name: s for s in theirs.service}
    assert {s.name for s in mine.service} == {"Info", "Rerank"}
    for service in mine.service:
        methods = {m.name: m for m in their_services[service.name].method}
        assert len(service.method) == len(methods)
        for method in service.method:
            twin = methods[method.name]
            shape = (method.input_type, method.output_type, method.client_streaming, method.server_streaming)
            assert shape == (twin.input_type, twin.output_type, twin.client_streaming, twin.server_streaming)
    used = {"InfoRequest", "InfoResponse", "Metadata", "RerankRequest", "RerankStreamRequest", "Rank", "RerankResponse"}
    assert {m.name for m in mine.message_type} == used
