"""The OpenAPI 3 document of every REST route Envoy serves, generated from the descriptor set.

The build step (``setup.py``) calls :func:`write` after it builds ``gateway/assets/rerank.pb``;
Envoy serves the result at ``GET /openapi.json``. Nothing is written by hand: the operations
are the ``google.api.http`` rules of the transcoded services (:data:`rerank.gateway.routes.SERVICES`),
their schemas the request and response messages under proto3's JSON mapping as Envoy prints it
(``preserve_proto_field_names``: field names as declared; 64-bit integers as strings;
``google.protobuf.Value`` as any JSON value, ``Struct`` as an object), the descriptions the
proto comments. Routes Envoy answers itself (:data:`rerank.gateway.routes.STATIC_ROUTES`) and the
metrics route are added from :mod:`rerank.gateway.routes`.

Standard library and protobuf only: the build step imports it from the source tree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from .routes import METRICS_PATH, PUBLIC_METHODS, RESPONSE_BODY, SERVICES, STATIC_ROUTES

Json = dict[str, Any]
F = descriptor_pb2.FieldDescriptorProto

_SCALARS: dict[int, Json] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    F.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    # proto3 JSON prints 64-bit integers as strings.
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_SINT64: {"type": "string", "format": "int64"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WELL_KNOWN: dict[str, Json] = {
    ".google.protobuf.Value": {"description": "Any JSON value."},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
}

TEI_ERROR: Json = {
    "type": "object",
    "description": "Text Embeddings Inference's error shape.",
    "properties": {
        "error": {"type": "string"},
        "error_type": {"type": "string", "enum": ["validation", "empty", "overloaded", "unhealthy", "unauthorized"]},
    },
    "required": ["error", "error_type"],
}
"""TEI's routes answer errors in TEI's shape (reshaped by Envoy's Lua filter)."""

_HTTP_METHODS = ("get", "put", "post", "delete", "patch")


class _Comments:
    """The leading comments of one proto file, by source path, on one line each."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.locations = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}

    def __call__(self, path: tuple[int, ...]) -> str:
        return " ".join(line.strip() for line in self.locations.get(path, "").strip().splitlines())


class _Index:
    """Messages, enums and comments of a descriptor set, by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        self.comments: dict[str, str] = {}
        for file in files.file:
            prefix = f".{file.package}" if file.package else ""
            comment = _Comments(file)
            for i, message in enumerate(file.message_type):
                self._message(f"{prefix}.{message.name}", message, (4, i), comment)
            for enum in file.enum_type:
                self.enums[f"{prefix}.{enum.name}"] = enum
            for i, service in enumerate(file.service):
                name = f"{prefix}.{service.name}".lstrip(".")
                self.services[name] = service
                for j, method in enumerate(service.method):
                    self.comments[f"{name}.{method.name}"] = comment((6, i, 2, j))

    def _message(
        self, name: str, message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], comment: _Comments
    ) -> None:
        self.messages[name] = message
        self.comments[name] = comment(path)
        for k, field in enumerate(message.field):
            self.comments[f"{name}.{field.name}"] = comment((*path, 2, k))
        for k, nested in enumerate(message.nested_type):
            self._message(f"{name}.{nested.name}", nested, (*path, 3, k), comment)
        for nested_enum in message.enum_type:
            self.enums[f"{name}.{nested_enum.name}"] = nested_enum


class _Builder:
    def __init__(self, index: _Index) -> None:
        self.index = index
        self.schemas: dict[str, Json] = {}

    def ref(self, type_name: str) -> Json:
        """A ``$ref`` to the message ``type_name`` (``.pkg.Name``), adding its schema once."""
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        key = type_name.lstrip(".")
        if key not in self.schemas:
            self.schemas[key] = {}  # placeholder: recursive messages
            self.schemas[key] = self.message_schema(type_name)
        return {"$ref": f"#/components/schemas/{key}"}

    def message_schema(self, type_name: str) -> Json:
        message = self.index.messages[type_name]
        properties = {f.name: self.field_schema(type_name, f) for f in message.field}
        schema: Json = {"type": "object", "properties": properties}
        if self.index.comments.get(type_name):
            schema["description"] = self.index.comments[type_name]
        return schema

    def field_schema(self, owner: str, field: descriptor_pb2.FieldDescriptorProto) -> Json:
        entry = self.index.messages.get(field.type_name) if field.type == F.TYPE_MESSAGE else None
        if entry is not None and entry.options.map_entry:
            value = self.single(entry.field[1])
            schema: Json = {"type": "object", "additionalProperties": value}
        elif field.label == F.LABEL_REPEATED:
            schema = {"type": "array", "items": self.single(field)}
        else:
            schema = self.single(field)
        description = self.index.comments.get(f"{owner}.{field.name}", "")
        if field.proto3_optional:
            description = (description + " Optional: omitted when unset.").strip()
        if description:
            # A $ref takes no siblings in OpenAPI 3.0: wrap it to carry the description.
            schema = {"allOf": [schema]} if "$ref" in schema else schema
            schema["description"] = description
        return schema

    def single(self, field: descriptor_pb2.FieldDescriptorProto) -> Json:
        if field.type == F.TYPE_MESSAGE:
            return self.ref(field.type_name)
        if field.type == F.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in self.index.enums[field.type_name].value]}
        return dict(_SCALARS[field.type])

    def response_schema(self, method_name: str, output_type: str) -> Json:
        field_name = RESPONSE_BODY.get(method_name)
        if field_name is None:
            return self.ref(output_type)
        message = self.index.messages[output_type]
        field = next(f for f in message.field if f.name == field_name)
        return self.field_schema(output_type.lstrip("."), field)


def http_rules(
    files: descriptor_pb2.FileDescriptorSet, services: tuple[str, ...] = SERVICES
) -> list[tuple[str, str, str]]:
    """(HTTP method, path, ``package.Service.Method``) of every ``google.api.http`` rule of
    ``services``: what the transcoder serves."""
    from google.api import annotations_pb2  # googleapis-common-protos: the http option's extension

    index = _Index(files)
    rules = []
    for service_name in services:
        for method in index.services[service_name].method:
            options = descriptor_pb2.MethodOptions.FromString(method.options.SerializeToString())
            rule = options.Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb in _HTTP_METHODS:
                rules.append((verb, getattr(rule, verb), f"{service_name}.{method.name}"))
    return rules


def build(files: descriptor_pb2.FileDescriptorSet, version: str = "0") -> Json:
    """The OpenAPI 3.0 document for the descriptor set ``files``."""
    index = _Index(files)
    builder = _Builder(index)
    paths: dict[str, Json] = {}
    status_ref = builder.ref(".google.rpc.Status")
    for verb, path, method_name in http_rules(files):
        service_name, _, name = method_name.rpartition(".")
        method = next(m for m in index.services[service_name].method if m.name == name)
        tei = service_name == "rerank.v1.TeiService"
        error = TEI_ERROR if tei else status_ref
        operation: Json = {
            "operationId": method_name.replace(".", "_"),
            "summary": index.comments.get(method_name, "") or name,
            "tags": [service_name],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": builder.response_schema(method_name, method.output_type)}
                    },
                },
                "default": {"description": "Error", "content": {"application/json": {"schema": error}}},
            },
        }
        if method_name in PUBLIC_METHODS:
            operation["security"] = []
        if verb in ("post", "put", "patch"):
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": builder.ref(method.input_type)}},
            }
        paths.setdefault(path, {})[verb] = operation
    for route in STATIC_ROUTES:
        paths[route.path] = {"get": _static(route.path, route.summary, route.content_type)}
    metrics = _static(
        METRICS_PATH,
        "Prometheus metrics (text exposition format); a key unless RERANK_METRICS_REQUIRE_KEY=false.",
        "text/plain",
    )
    del metrics["security"]  # the document's default: a key
    paths[METRICS_PATH] = {"get": metrics}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "rerank",
            "version": version,
            "description": "Cross-encoder reranking: Jina-compatible /v1/rerank, Cohere v2 /v2/rerank and "
            "Text Embeddings Inference /rerank, one model and batcher behind them all. Generated from the "
            "protos at build time.",
        },
        "security": [{"bearerAuth": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": dict(sorted(builder.schemas.items())),
        },
    }


def _static(path: str, summary: str, content_type: str) -> Json:
    kind = content_type.split(";")[0]
    schema: Json = {"type": "object"} if kind == "application/json" else {"type": "string"}
    return {
        "operationId": "get" + path.replace("/", "_").replace(".", "_").replace("-", "_"),
        "summary": summary,
        "security": [],
        "responses": {"200": {"description": "OK", "content": {kind: {"schema": schema}}}},
    }


def write(descriptor: Path, out: Path, version: str = "0") -> Path:
    """Writes the document for the descriptor set file ``descriptor`` to ``out``."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes())
    text = json.dumps(build(files, version), indent=1, ensure_ascii=False) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
