"""Errors as rich gRPC statuses: a code, a message naming the problem, and details.

Through Envoy (``convert_grpc_status``) they become JSON bodies with the matching HTTP status:
``{"code": 3, "message": "...", "details": [{"@type": ".../google.rpc.BadRequest", ...}]}``.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "rerank.v1"


class ApiError(Exception):
    """An error to return to the client; raised anywhere under a handler."""

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str, field: str | None = None,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.field = field
        self.metadata = metadata or {}

    def to_status(self) -> grpc.Status:
        details = []
        if self.field is not None:
            bad = error_details_pb2.BadRequest(
                field_violations=[error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)]
            )
            details.append(bad)
        details.append(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata))
        packed = []
        for detail in details:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        return rpc_status.to_status(status)


def invalid(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, reason=reason, field=field)

