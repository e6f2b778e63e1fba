"""Generated requests for the fuzzing runs, and the properties every answer must have.

``tests/integration/test_fuzzing.py`` drives them against the real service behind the real
Envoy: seeded and small in ``make test`` (CI), at full size in ``make fuzz``
(``RERANK_FUZZ=full``: at least :data:`MIN_FULL` REST requests and as many gRPC calls).

* REST, through Envoy, on every public route: schemathesis cases from the served
  ``/openapi.json`` (valid and schema-violating bodies), and hypothesis-built raw bodies:
  malformed JSON, wrong types, odd Unicode (lone surrogates escaped in JSON and raw in UTF-8,
  NUL, RTL marks, combining marks, 4-byte emoji), sizes near and over Envoy's body limit,
  odd ``Authorization`` and ``Content-Type`` headers, huge and unusual headers, odd paths and
  methods.
* gRPC, on the service's port and through Envoy: hypothesis-built messages of every method
  (``rerank.v1``, ``tei.v1``, health, the edge's check) with odd metadata, and raw bytes
  (random, or a valid message mutated) as the body of a generic unary or client-streaming call.
* The admission path: the edge's check asked directly with hypothesis-built requests (any
  path, method, key, ``content-length``, content type; a peer's secret guessed), each answer an
  allowance or a denial in the service's own shape, bounded; and through Envoy, REST bodies
  announcing odd sizes.
* ``/metrics``: the metrics port's HTTP server fed odd request lines, methods, paths and
  headers (raw bytes on a socket), and ``GET /metrics`` through Envoy with odd keys.

The properties: no 5xx and a JSON body naming the problem on every REST answer; no gRPC
status outside :data:`ALLOWED_GRPC` and no exception text in any message; the service process
alive, its resident memory under :attr:`ServiceWatch.bound`. Torch-free.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from tests.support import API_KEY, OTHER_KEY

FULL = os.environ.get("RERANK_FUZZ", "") == "full"
"""``make fuzz``: the full run. Otherwise the seeded subset that CI runs."""
SEED = int(os.environ["RERANK_FUZZ_SEED"]) if os.environ.get("RERANK_FUZZ_SEED") else None
"""A full run is random (hypothesis prints how to replay a failure); this fixes its seed."""

MIN_FULL = 10_000
"""Requests a full run must send on each side (REST, gRPC); it fails with fewer."""

MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""The stack's body and gRPC message limit (the ``RERANK_MAX_REQUEST_BYTES`` default)."""

RSS_HEADROOM = 256 * 1024 * 1024
"""How far the service's resident memory may grow over its warmed-up baseline during a run.

The fuzzer sends one request at a time; the largest the service accepts is
:data:`MAX_REQUEST_BYTES` (the gRPC limit; Envoy's body limit on REST). Holding one such
request decoded (protobuf's copy, Python's strings at up to 4 bytes a character, the
tokenizer's input) is a few tens of MiB, and the tiny fixture models' activations for the
largest micro-batch (8192 tokens x 64 wide) a few MiB more. 256 MiB is several times that:
staying under it over 20,000 requests means nothing is kept per request (a leak) and no input
makes the service buffer without bound."""

TEI_PATHS = ("/rerank", "/info")
"""Routes whose errors are TEI's ``{"error", "error_type"}``; every other one's are
``{"code", "message", "details"}``."""

MODELS = ("xlmr-tiny", "bert-tiny")

ALLOWED_GRPC = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,  # a bad field, an undecodable message
        grpc.StatusCode.NOT_FOUND,  # an unknown model
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # too many documents, a message over the limit
        grpc.StatusCode.UNAUTHENTICATED,  # no key, a wrong key
        grpc.StatusCode.UNIMPLEMENTED,  # a method nobody serves (raw calls only)
    }
)
"""What a fuzzed call may end with. Every other code is a finding: UNKNOWN and INTERNAL (an
exception escaped a handler), DATA_LOSS, UNAVAILABLE (the service died or reset the stream),
DEADLINE_EXCEEDED (a request hung), CANCELLED, and codes the service never means to send."""

LEAKS = ("Traceback", "<class '", "Exception ", "Error parsing message")
"""Text no client-visible message may contain: Python's exception machinery showing through."""


def hypothesis_settings(examples: int) -> settings:
    """Hypothesis for the fuzzing runs: no deadline (a request through Envoy takes what it
    takes), no example database, every health check off (large and slow inputs are the point),
    and derandomized (seeded) unless this is a full run."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not FULL and SEED is None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        print_blob=True,
    )


def examples(full: int, seeded: int) -> int:
    return full if FULL else seeded


# --------------------------------------------------------------------------------- bookkeeping


@dataclass
class Tally:
    """What a run sent and what came back, by side and by answer."""

    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)

    def rest(self, kind: str, status: int) -> None:
        self.sent["rest"] += 1
        self.sent[f"rest:{kind}"] += 1
        self.answers[f"http {status}"] += 1

    def grpc(self, kind: str, code: grpc.StatusCode) -> None:
        self.sent["grpc"] += 1
        self.sent[f"grpc:{kind}"] += 1
        self.answers[f"grpc {code.name}"] += 1

    def summary(self) -> str:
        lines = [f"{key}: {count}" for key, count in sorted(self.sent.items())]
        lines += [f"  {key}: {count}" for key, count in sorted(self.answers.items())]
        return "\n".join(lines)


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS`` in ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@dataclass
class ServiceWatch:
    """The service process under fuzzing: alive after every request, and its memory."""

    pid: int
    alive: Callable[[], bool]
    baseline: int = 0
    peak: int = 0

    def __post_init__(self) -> None:
        self.baseline = self.peak = rss_bytes(self.pid)

    @property
    def bound(self) -> int:
        return self.baseline + RSS_HEADROOM

    def check(self) -> None:
        assert self.alive(), f"the service process {self.pid} died"
        rss = rss_bytes(self.pid)
        self.peak = max(self.peak, rss)
        assert rss <= self.bound, f"service RSS {rss >> 20} MiB over the bound {self.bound >> 20} MiB"


# --------------------------------------------------------------------------------- properties


def check_rest(response: httpx.Response, path: str, content_type: str | None = None) -> None:
    """A REST answer: under 500; a native gRPC answer when the request said gRPC, else JSON, and
    an error names its problem in the face's error shape."""
    shown = f"{response.request.method} {path} -> {response.status_code}: {response.text[:300]!r}"
    assert response.status_code < 500, shown
    answered = response.headers.get("content-type", "")
    if (content_type or "").startswith("application/grpc") and answered.startswith("application/grpc"):
        code = response.headers.get("grpc-status")
        assert code is None or grpc_code(int(code)) in ALLOWED_GRPC, f"{shown} grpc-status {code}"
        return
    if response.status_code < 300 and not any(path.startswith(p) for p in ("/v1/", "/v2/", *TEI_PATHS, "/health")):
        return  # Envoy's own files: the OpenAPI document, the API page
    if response.request.method == "HEAD":
        return
    assert answered.startswith("application/json"), shown
    body = response.json()
    if response.status_code >= 300:
        assert isinstance(body, dict), shown
        message = body.get("message", body.get("error"))
        assert isinstance(message, str) and message, shown
        assert not any(leak in message for leak in LEAKS), shown


def grpc_code(value: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == value)


def check_grpc(call: Callable[[], Any]) -> grpc.StatusCode:
    """Runs one call; its status must be in :data:`ALLOWED_GRPC`, its message free of exception text."""
    try:
        call()
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
        assert code in ALLOWED_GRPC, f"{code.name}: {details[:300]}"
        assert not any(leak in details for leak in LEAKS), f"{code.name}: {details[:300]}"
        return code  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


# --------------------------------------------------------------------------------- text and JSON

ODD_PIECES = (
    "\x00",
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b\u200c\u200d\u2060\ufeff\u00ad",  # invisible
    "e\u0301\u0302\u0303\u0304\u0305\u0306",  # stacked combining marks
    "Z\u0338\u0322\u0327\u031b\u0354\u034e\u031e",
    "👩\u200d👩\u200d👧\u200d👦",  # a ZWJ emoji sequence
    "🐼",
    "\U0010ffff",
    "\uffff",
    "\ufffd",
    "\r\n",
    "\t",
    "\u2028\u2029",
    "العربية",
    "עִבְרִית",
    "熊猫",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    " ",
    "panda",
    "bear",
    '"',
    "\\",
    "{}",
    "<s>",
    "</s>",
    "[CLS]",
    "[SEP]",
    "<unk>",
)
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


def texts(surrogates: bool = False) -> st.SearchStrategy[str]:
    """Short odd text, long repetitive text; with ``surrogates``, lone surrogates too (they
    exist in JSON as ``\\ud800`` escapes, not in valid UTF-8 nor in a protobuf string)."""
    pieces = st.lists(st.sampled_from(ODD_PIECES), max_size=12).map("".join)
    alphabet = st.characters(codec="utf-8") if not surrogates else st.one_of(st.characters(codec="utf-8"), SURROGATES)
    long = st.builds(
        lambda unit, n: unit * n, st.sampled_from(["a", "panda ", "🐼", "e\u0301", "\x00", " "]), st.integers(1, 3000)
    )
    return st.one_of(pieces, st.text(alphabet, max_size=40), long, st.sampled_from(["", " ", "What is a panda?"]))


def json_values(surrogates: bool = True) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),  # NaN and infinities: not JSON, and json.dumps writes them anyway
        texts(surrogates),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(texts(surrogates), children, max_size=4)
        ),
        max_leaves=8,
    )


ABSENT = object()


def _field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A body field: usually well-typed, sometimes any JSON value, sometimes absent."""
    return st.one_of(plausible, plausible, json_values(), st.just(ABSENT))


def _model() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from([*MODELS, ""]), texts(surrogates=True))


def _documents(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(item, max_size=6),
        st.integers(990, 1010).map(lambda n: ["a"] * n),  # around the 1000-document limit
    )


_TEXT = texts(surrogates=True)
_INT = st.one_of(st.integers(-3, 12), st.integers(-(2**31), 2**31 - 1), st.integers(-(2**64), 2**64))
FACE_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "/v1/rerank": {
        "model": _model(),
        "query": _TEXT,
        "documents": _documents(st.one_of(_TEXT, st.fixed_dictionaries({"text": _TEXT}), json_values())),
        "top_n": _INT,
        "return_documents": st.booleans(),
        "normalize": st.booleans(),
        "long_documents": st.one_of(st.sampled_from(["truncate", "window", ""]), _TEXT),
        "instruction": _TEXT,
    },
    "/v2/rerank": {
        "model": _model(),
        "query": _TEXT,
        "documents": _documents(_TEXT),
        "top_n": _INT,
        "max_tokens_per_doc": _INT,
        "priority": _INT,
        "instruction": _TEXT,
    },
    "/rerank": {
        "model": _model(),
        "query": _TEXT,
        "texts": _documents(_TEXT),
        "truncate": st.booleans(),
        "truncation_direction": st.one_of(st.sampled_from(["right", "left", "Left", "RIGHT", ""]), _TEXT),
        "raw_scores": st.booleans(),
        "return_text": st.booleans(),
        "instruction": _TEXT,
    },
}
REST_FACES = tuple(FACE_FIELDS)
NEAR_VALID: dict[str, dict[str, Any]] = {
    "/v1/rerank": {"model": "xlmr-tiny", "query": "What is a panda?", "documents": ["a panda", {"text": "a bear"}]},
    "/v2/rerank": {"model": "bert-tiny", "query": "What is a panda?", "documents": ["a panda", "a bear"]},
    "/rerank": {"query": "What is a panda?", "texts": ["a panda", "a bear"]},
}


@st.composite
def face_bodies(draw: st.DrawFn, path: str) -> dict[str, Any]:
    """A request object for a face: its fields each well-typed, of a wrong type, or absent,
    and sometimes unknown fields beside them."""
    fields = FACE_FIELDS[path]
    if draw(st.booleans()):
        # A valid request with one or two fields changed: reaches the checks behind the first.
        body = dict(NEAR_VALID[path])
        for name in draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=2, unique=True)):
            value = draw(_field(fields[name]))
            if value is ABSENT:
                body.pop(name, None)
            else:
                body[name] = value
        return body
    body = {}
    for name, plausible in fields.items():
        value = draw(_field(plausible))
        if value is not ABSENT:
            body[name] = value
    body.update(draw(st.dictionaries(texts(True), json_values(), max_size=2)))
    return body


def _encode(value: Any, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)  # lone surrogates: \ud800 escapes, or raw
    return text.encode("utf-8", "surrogatepass")


MALFORMED = (
    b"",
    b"{",
    b"}",
    b"null",
    b"[]",
    b"{}",
    b'"x"',
    b"1",
    b"NaN",
    b'{"query":}',
    b'{"query":"a",}',
    b'{"query":"a" "documents":["x"]}',
    b"{'query': 'a'}",
    b'{"query":"a","query":"b","documents":["x"],"documents":[]}',
    b'\xef\xbb\xbf{"query":"a","documents":["x"]}',  # a UTF-8 byte order mark
    b'\xff\xfe{\x00"\x00q\x00"\x00:\x001\x00}\x00',  # UTF-16
    b'{"query":"a\xc3","documents":["x"]}',  # cut UTF-8
    b'{"query":"a\xed\xa0\x80","documents":["x"]}',  # an encoded surrogate
    b'{"query":"\\ud83d","documents":["\\udc3c\\ud83d"]}',
    b'{"query":"\\u0000","documents":["\\u0000"]}',
    b'{"query":"a","documents":["x"]}\x00',
    b'{"query":"a","documents":["x"]} {"query":"b"}',
    b'{"documents":' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"documents":[' + b'{"text":' * 300 + b'"x"' + b"}" * 300 + b"]}",
    b'{"query":1e999999,"documents":["x"]}',
    b'{"top_n":-0,"query":"a","documents":["x"]}',
    b'{"top_n":1.0,"query":"a","documents":["x"]}',
    b'{"top_n":"2","query":"a","documents":["x"]}',
    b'{"top_n":"0x10","query":"a","documents":["x"]}',
)


@st.composite
def raw_bodies(draw: st.DrawFn, path: str) -> bytes:
    """Bytes for a face's body: a generated object encoded (escaped or raw UTF-8), then maybe
    broken (cut, a byte changed, garbage appended), or a known malformed body, or random bytes."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.sampled_from(MALFORMED))
    if choice == 1:
        return draw(st.binary(max_size=200))
    value = draw(st.one_of(face_bodies(path), face_bodies(path), json_values()))
    data = _encode(value, ascii_only=draw(st.booleans()))
    mutation = draw(st.integers(0, 9))
    if mutation == 0 and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if mutation == 1 and data:
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if mutation == 2:
        return data + draw(st.binary(min_size=1, max_size=20))
    return data


# --------------------------------------------------------------------------------- headers

HEADER_VALUE = st.text(
    st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E), st.characters(min_codepoint=0x80, max_codepoint=0xFF)
    ),
    max_size=60,
)
"""What HTTP/1.1 lets a header value hold (visible ASCII, space, obs-text): sent as Latin-1."""
TOKEN = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~"), min_size=1, max_size=20)

AUTHORIZATIONS = (
    None,
    "",
    "Bearer",
    "Bearer ",
    f"bearer {API_KEY}",
    f"BEARER {API_KEY}",
    f"Bearer  {API_KEY}",
    f"Bearer {API_KEY} ",
    f"Bearer {API_KEY}x",
    f"Bearer {API_KEY[:-1]}",
    f"Bearer {API_KEY},Bearer {OTHER_KEY}",
    f"Bearer {OTHER_KEY}",
    "Basic dGVzdDp0ZXN0",
    "Token " + API_KEY,
    "Bearer " + "k" * 8000,
    "Bearer \xe9\xff",
)
# Not "application/grpc" (nor "+proto", "+json"): Envoy routes those as native gRPC, which is not
# REST; gRPC is fuzzed with gRPC clients below.
CONTENT_TYPES = (
    None,
    "",
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "APPLICATION/JSON",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/x-protobuf",
    "application/json, application/grpc",
)
SPECIAL_HEADERS = {
    "grpc-timeout": st.sampled_from(["1n", "1m", "0S", "99999999H", "garbage", "-1S", ""]),
    "x-envoy-upstream-rq-timeout-ms": st.sampled_from(["1", "0", "-5", "abc"]),
    "x-envoy-max-retries": st.sampled_from(["0", "100", "x"]),
    "x-envoy-retry-on": st.sampled_from(["5xx", "reset", "nonsense"]),
    "x-request-id": HEADER_VALUE,
    "x-forwarded-for": st.sampled_from(["1.2.3.4", "::1", "junk", "127.0.0.1, 10.0.0.1"]),
    "te": st.sampled_from(["trailers", "gzip", ""]),
    "accept": st.sampled_from(["application/xml", "*/*", "", "application/grpc"]),
    "accept-encoding": st.sampled_from(["gzip", "br", "identity;q=0", "*"]),
    "grpc-encoding": st.sampled_from(["gzip", "snappy", "identity"]),
    "x-http-method-override": st.sampled_from(["GET", "DELETE"]),
    "expect": st.sampled_from(["100-continue", "nonsense"]),
}


@st.composite
def header_sets(draw: st.DrawFn) -> dict[str, bytes]:
    """Request headers: an odd or missing Authorization and Content-Type, special headers
    Envoy and gRPC read, random ones, and sometimes one near or over the 16 KiB header limit."""
    headers: dict[str, str] = {}
    auth = draw(
        st.one_of(
            st.just(f"Bearer {API_KEY}"), st.sampled_from(AUTHORIZATIONS), HEADER_VALUE.map(lambda v: "Bearer " + v)
        )
    )
    if auth is not None:
        headers["authorization"] = auth
    content_type = draw(st.one_of(st.sampled_from(CONTENT_TYPES), HEADER_VALUE))
    if content_type is not None:
        headers["content-type"] = content_type
    for name in draw(st.lists(st.sampled_from(sorted(SPECIAL_HEADERS)), max_size=3, unique=True)):
        headers[name] = draw(SPECIAL_HEADERS[name])
    headers.update(draw(st.dictionaries(TOKEN.map(lambda t: "x-" + t), HEADER_VALUE, max_size=3)))
    if draw(st.integers(0, 9)) == 0:
        size = draw(st.sampled_from([1000, 8 * 1024, 15 * 1024, 16 * 1024, 17 * 1024, 64 * 1024]))
        headers["x-" + draw(TOKEN)] = "v" * size
    # HTTP/1.1 has no leading or trailing whitespace in a value (h11 refuses to send it).
    return {name: value.strip(" \t").encode("latin-1") for name, value in headers.items()}


PATHS = (
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/v1/models",
    "/health",
    "/info",
    "/openapi.json",
    "/docs",
    "/v1/rerank/",
    "//v1/rerank",
    "/v1//rerank",
    "/V1/RERANK",
    "/v1/rerank?top_n=2&model=x",
    "/v1/rerank?%ff=%00",
    "/v1/rerank/../v2/rerank",
    "/v1/%72erank",
    "/v1/rerank%00",
    "/v1/rerank;x=1",
    "/rerank.v1.RerankService/Rerank",
    "/tei.v1.Rerank/Rerank",
    "/grpc.health.v1.Health/Check",
    "/metrics",
    "/metrics?name[]=rerank_requests_total",
    "/envoy.service.auth.v3.Authorization/Check",
    "/",
    "*",
)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")


@st.composite
def odd_requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(method, path, body) for routes and methods a client may get wrong."""
    path = draw(st.one_of(st.sampled_from(PATHS), TOKEN.map(lambda t: "/" + t), TOKEN.map(lambda t: "/v1/" + t)))
    method = draw(st.sampled_from(METHODS))
    body = draw(st.one_of(st.just(b""), raw_bodies("/v1/rerank")))
    return method, path, body


def size_cases(limit: int = MAX_REQUEST_BYTES) -> list[tuple[str, bytes]]:
    """(face, body) near and over Envoy's body limit: a huge query, a huge document, many
    documents, huge unknown fields, whitespace padding; escaped (6 bytes a character) too."""
    cases: list[tuple[str, bytes]] = []
    for path, docs in (("/v1/rerank", "documents"), ("/v2/rerank", "documents"), ("/rerank", "texts")):
        head = {"model": "xlmr-tiny", "query": "q"} if path != "/rerank" else {"query": "q"}
        for size in (limit - 4096, limit - 64, limit, limit + 1, limit + 4096, 2 * limit):
            prefix = json.dumps({**head, docs: ["a"]})[:-1].encode() + b', "pad": "'
            cases.append((path, prefix + b"p" * max(0, size - len(prefix) - 2) + b'"}'))
        n = limit // 6
        cases.append((path, json.dumps({**head, docs: ["x" * 200_000, "y" * 200_001]}).encode()))
        cases.append((path, json.dumps({**head, docs: ["z"] * 1000}).encode()))
        cases.append((path, json.dumps({**head, docs: ["\U0001f43c" * (n // 12)]}).encode()))  # escaped: \ud83d\udc3c
        cases.append((path, json.dumps({**head, "query": "\u0301" * 20_000, docs: ["a"]}).encode()))
        cases.append((path, b" " * (limit - 100) + json.dumps({**head, docs: ["a"]}).encode()))
        cases.append((path, json.dumps({**head, docs: [" " * 199_000 + "panda"] * 20}).encode()))
    return cases


# --------------------------------------------------------------------------------- gRPC

_PROTO_TEXT = texts(surrogates=False)
_INT32 = st.one_of(st.integers(-3, 12), st.integers(-(2**31), 2**31 - 1))
_UINT32 = st.integers(0, 2**32 - 1)


def _value(draw: st.DrawFn, message: Any) -> None:
    """Fills a ``google.protobuf.Value`` with a string, a ``{"text"}`` object or any JSON value."""
    from google.protobuf import json_format

    kind = draw(st.integers(0, 3))
    if kind == 0:
        message.string_value = draw(_PROTO_TEXT)
    elif kind == 1:
        message.struct_value.update({"text": draw(st.one_of(_PROTO_TEXT, json_values(False)))})
    else:
        value = draw(json_values(False))
        try:
            json_format.ParseDict(value, message)
        except (json_format.ParseError, ValueError, TypeError):
            message.string_value = repr(value)[:100]


def _maybe(draw: st.DrawFn, strategy: st.SearchStrategy[Any]) -> Any:
    return draw(st.one_of(st.just(ABSENT), strategy))


def _set(message: Any, **fields: Any) -> Any:
    for name, value in fields.items():
        if value is not ABSENT:
            setattr(message, name, value)
    return message


def _texts(draw: st.DrawFn) -> list[str]:
    return draw(st.one_of(st.lists(_PROTO_TEXT, max_size=6), st.integers(990, 1010).map(lambda n: ["a"] * n)))


@st.composite
def rerank_messages(draw: st.DrawFn) -> Any:
    from rerank.service.protocol import rerank_pb2

    message = _set(
        rerank_pb2.RerankRequest(),
        model=draw(st.one_of(st.sampled_from([*MODELS, ""]), _PROTO_TEXT)),
        query=draw(_PROTO_TEXT),
        top_n=_maybe(draw, _INT32),
        return_documents=_maybe(draw, st.booleans()),
        normalize=_maybe(draw, st.booleans()),
        long_documents=draw(st.one_of(st.sampled_from(["truncate", "window", ""]), _PROTO_TEXT)),
        instruction=_maybe(draw, _PROTO_TEXT),
    )
    for _ in range(draw(st.one_of(st.integers(0, 6), st.just(1001)))):
        _value(draw, message.documents.add())
    return message


@st.composite
def cohere_messages(draw: st.DrawFn) -> Any:
    from rerank.service.protocol import cohere_pb2

    return _set(
        cohere_pb2.CohereRerankRequest(documents=_texts(draw)),
        model=draw(st.one_of(st.sampled_from([*MODELS, ""]), _PROTO_TEXT)),
        query=draw(_PROTO_TEXT),
        top_n=_maybe(draw, _INT32),
        max_tokens_per_doc=_maybe(draw, _INT32),
        priority=_maybe(draw, _INT32),
        instruction=_maybe(draw, _PROTO_TEXT),
    )


@st.composite
def tei_rest_messages(draw: st.DrawFn) -> Any:
    from rerank.service.protocol import tei_rest_pb2

    return _set(
        tei_rest_pb2.TeiRerankRequest(texts=_texts(draw)),
        query=draw(_PROTO_TEXT),
        truncate=_maybe(draw, st.booleans()),
        truncation_direction=draw(st.one_of(st.sampled_from(["right", "left", "LEFT", ""]), _PROTO_TEXT)),
        raw_scores=draw(st.booleans()),
        return_text=draw(st.booleans()),
        model=draw(st.one_of(st.sampled_from([*MODELS, ""]), _PROTO_TEXT)),
        instruction=_maybe(draw, _PROTO_TEXT),
    )


@st.composite
def tei_messages(draw: st.DrawFn) -> Any:
    from rerank.service.protocol import tei_pb2

    return _set(
        tei_pb2.RerankRequest(texts=_texts(draw)),
        query=draw(_PROTO_TEXT),
        truncate=draw(st.booleans()),
        raw_scores=draw(st.booleans()),
        return_text=draw(st.booleans()),
        truncation_direction=draw(st.sampled_from([0, 1, 2, 7, -1, 2**31 - 1])),  # open enum: unknown values too
        instruction=_maybe(draw, _PROTO_TEXT),
    )


@st.composite
def tei_stream_messages(draw: st.DrawFn) -> list[Any]:
    from rerank.service.protocol import tei_pb2

    return [
        _set(
            tei_pb2.RerankStreamRequest(),
            query=draw(_PROTO_TEXT),
            text=draw(_PROTO_TEXT),
            truncate=draw(st.booleans()),
            raw_scores=draw(st.booleans()),
            return_text=draw(st.booleans()),
            truncation_direction=draw(st.sampled_from([0, 1, 5])),
            instruction=_maybe(draw, _PROTO_TEXT),
        )
        for _ in range(draw(st.integers(0, 5)))
    ]


def _empty(module: str, name: str) -> st.SearchStrategy[Any]:
    def build() -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)()

    return st.builds(build)


@dataclass(frozen=True)
class Method:
    path: str
    messages: st.SearchStrategy[Any]
    streaming: bool = False
    """Client-streaming: ``messages`` makes a list of requests."""


def grpc_methods() -> tuple[Method, ...]:
    """Every method the service serves, with a strategy for its request messages."""
    p = "rerank.service.protocol"
    return (
        Method("/rerank.v1.RerankService/Rerank", rerank_messages()),
        Method("/rerank.v1.RerankService/ListModels", _empty(f"{p}.rerank_pb2", "ListModelsRequest")),
        Method("/rerank.v1.RerankService/Health", _empty(f"{p}.rerank_pb2", "HealthRequest")),
        Method("/rerank.v1.CohereService/Rerank", cohere_messages()),
        Method("/rerank.v1.TeiService/Rerank", tei_rest_messages()),
        Method("/rerank.v1.TeiService/Info", _empty(f"{p}.tei_rest_pb2", "TeiInfoRequest")),
        Method("/tei.v1.Rerank/Rerank", tei_messages()),
        Method("/tei.v1.Info/Info", _empty(f"{p}.tei_pb2", "InfoRequest")),
        Method("/tei.v1.Rerank/RerankStream", tei_stream_messages(), streaming=True),
        Method(
            "/grpc.health.v1.Health/Check",
            st.builds(_health_request, st.sampled_from(["", "rerank.v1.RerankService", "nope"])),
        ),
        Method("/envoy.service.auth.v3.Authorization/Check", check_requests()),
    )


def _health_request(service: str) -> Any:
    from grpc_health.v1 import health_pb2

    return health_pb2.HealthCheckRequest(service=service)


UNKNOWN_METHODS = ("/rerank.v1.RerankService/Nope", "/rerank.v1.Nope/Rerank", "/x/y", "/tei.v1.Embed/Embed")

METADATA_AUTH = (
    None,
    "",
    "Bearer",
    f"Bearer {API_KEY}",
    f"Bearer {API_KEY}",
    f"Bearer {API_KEY}",
    f"bearer {API_KEY}",
    f"Bearer {OTHER_KEY}",
    f"Bearer {API_KEY} ",
    "Bearer wrong",
    "Basic dGVzdA==",
    "Bearer " + "k" * 4000,
)
METADATA_KEY = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_."), min_size=1, max_size=20)
METADATA_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
"""What gRPC lets an ASCII metadata value hold."""


@st.composite
def metadata(draw: st.DrawFn) -> tuple[tuple[str, str | bytes], ...]:
    """Call metadata: an odd or missing key, random entries, binary (``-bin``) ones."""
    items: list[tuple[str, str | bytes]] = []
    auth = draw(
        st.one_of(
            st.just(f"Bearer {API_KEY}"),
            st.just(f"Bearer {API_KEY}"),
            st.sampled_from(METADATA_AUTH),
            METADATA_VALUE.map(lambda v: "Bearer " + v),
        )
    )
    if auth is not None:
        items.append(("authorization", auth))
    for _ in range(draw(st.integers(0, 2))):
        name = "x-" + draw(METADATA_KEY)
        if draw(st.booleans()):
            items.append((name + "-bin", draw(st.binary(max_size=30))))
        else:
            items.append((name, draw(METADATA_VALUE)))
    if draw(st.integers(0, 5)) == 0:
        items.append(("x-request-id", draw(METADATA_VALUE)))
    return tuple(items)


@st.composite
def raw_messages(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> bytes:
    """Bytes for a call's message: random, or a valid message serialized and then mutated
    (cut, bytes changed, garbage appended, a string field's bytes made invalid UTF-8)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=300))
    message = draw(valid)
    data = (
        b"".join(m.SerializeToString() for m in message) if isinstance(message, list) else message.SerializeToString()
    )
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.integers(0, 4))
        if mutation == 0 and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif mutation == 1 and data:
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif mutation == 2:
            data += draw(st.binary(min_size=1, max_size=30))
        elif mutation == 3:
            data = b"\x12\x02\xff\xfe" + data  # field 2 (a query or the texts), invalid UTF-8
        else:
            tag = draw(st.integers(1, 2**29 - 1)) << 3 | draw(st.sampled_from([0, 1, 2, 5, 3, 4, 6, 7]))
            data += _varint(tag) + draw(st.binary(max_size=12))
    return data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def odd_unicode_cases() -> list[tuple[str, bytes]]:
    """(face, body): each odd piece of text in a valid request's query, then in a document,
    JSON-escaped and raw; and lone surrogates, escaped. Deterministic, so that even the seeded
    run reaches the model with every one of them (a small random run rarely draws them)."""
    cases: list[tuple[str, bytes]] = []
    pieces = [*ODD_PIECES, "\ud800", "\udfff", "a\udc00b", "\ud83d\udc3c"]
    for path, base in NEAR_VALID.items():
        docs = "texts" if path == "/rerank" else "documents"
        for piece in pieces:
            for body in ({**base, "query": f"panda {piece} bear"}, {**base, docs: [f"a {piece}", piece]}):
                cases.extend((path, _encode(body, ascii_only)) for ascii_only in (True, False))
    return cases


def odd_unicode_messages() -> list[Any]:
    """The same pieces in ``rerank.v1.RerankRequest`` messages (no lone surrogates: a protobuf
    string is UTF-8)."""
    from tests.support.calls import rerank_request

    out = []
    for piece in ODD_PIECES:
        out.append(rerank_request("xlmr-tiny", ["a panda", "bear"], query=f"panda {piece} bear"))
        out.append(rerank_request("bert-tiny", [f"a {piece}", piece, {"text": piece}]))
    return out


# --------------------------------------------------------------------------------- the admission path

CHECK_PATHS = (*PATHS, "/v1/rerank", "/v2/rerank", "/rerank", "/tei.v1.Rerank/RerankStream", "/metrics")
LENGTHS = ("0", "1", "65536", "4194304", "4194305", "99999999999999999999999", "-1", "1e3", " 12", "²", "", "0x10")
CONTENT_TYPES = ("application/json", "application/grpc", "application/grpc+proto", "application/grpc-web", "text/plain")
HEADER_TEXT = st.text(max_size=60)
"""A header value as Envoy passes it on (any Unicode its parser let through)."""


@st.composite
def check_requests(draw: st.DrawFn) -> Any:
    """What Envoy's ext_authz filter could ask the edge's check: any path and method, an odd or
    missing key, an odd body size and content type, stray headers."""
    from rerank.service.protocol import external_auth_pb2

    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = draw(st.sampled_from(METHODS))
    http.path = draw(st.one_of(st.sampled_from(CHECK_PATHS), HEADER_TEXT.map(lambda t: "/" + t)))
    http.protocol = draw(st.sampled_from(["HTTP/1.1", "HTTP/2", "HTTP/1.0", ""]))
    headers = {
        "authorization": draw(
            st.one_of(
                st.just(f"Bearer {API_KEY}"),
                st.just(f"Bearer {API_KEY}"),
                st.sampled_from([a for a in METADATA_AUTH if a is not None]),
                HEADER_TEXT,
            )
        ),
        "content-length": draw(st.one_of(st.sampled_from(LENGTHS), st.integers(0, 2**63).map(str))),
        "content-type": draw(st.one_of(st.sampled_from(CONTENT_TYPES), HEADER_TEXT)),
    }
    for name in draw(st.lists(st.sampled_from(sorted(headers)), unique=True)):
        del headers[name]
    extra = draw(st.dictionaries(METADATA_KEY, HEADER_TEXT, max_size=3))
    http.headers.update({**extra, **headers})
    return request


DENIALS = {401: 16, 429: 8, 503: 14}
"""The denials the check may answer with (HTTP status -> the gRPC code of its error)."""


def check_answer(response: Any) -> str:
    """An edge check's answer: allowed (only ``x-rerank-*`` headers set on the request) or a
    denial in the service's own error shape, never quoting more than a few hundred bytes of
    what was asked. Returns the outcome."""
    from rerank.service.admission import contract

    metadata = dict(response.dynamic_metadata)
    if response.HasField("denied_response"):
        denial = response.denied_response
        code = int(denial.status.code)
        assert code in DENIALS and response.status.code == DENIALS[code], response
        headers = {h.header.key: h.header.value for h in denial.headers}
        if "grpc-status" in headers:
            assert int(headers["grpc-status"]) == DENIALS[code] and denial.body, response
        else:
            error = json.loads(denial.body)
            assert error["code"] == DENIALS[code] and error["message"], denial.body
        assert len(denial.body) < 2048 and not any(leak in denial.body for leak in LEAKS), denial.body[:300]
        return str(metadata.get(contract.ADMISSION_METADATA, code))
    assert response.status.code == 0, response
    for option in response.ok_response.headers:
        assert option.header.key in (contract.HOLD_HEADER, contract.REPLICA_HEADER), response
    return str(metadata.get(contract.ADMISSION_METADATA, "passed"))


METRICS_REQUESTS = (
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.0\r\n\r\n",
    b"HEAD /metrics HTTP/1.1\r\n\r\n",
    b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
    b"GET /metrics HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\n",
    b"GET /admission?bytes=99999999999999999999 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/9.9\r\n\r\n",
    b"\r\n\r\n",
)


@st.composite
def metrics_requests(draw: st.DrawFn) -> bytes:
    """Bytes to send the metrics port: a known odd request, a request built of odd parts, or
    random bytes (a cut request line, a header without a colon, non-ASCII)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.one_of(st.sampled_from(METRICS_REQUESTS), st.binary(max_size=300)))
    method = draw(st.one_of(st.sampled_from(METHODS), TOKEN))
    paths = st.sampled_from(["/metrics", "/metrics?x=1", "/", "*", "/metrics/.."])
    path = draw(st.one_of(paths, TOKEN.map("/".__add__)))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", ""]))
    auth = draw(st.sampled_from([a for a in METADATA_AUTH if a is not None]))
    lines = [f"{method} {path} {version}".strip(), f"Authorization: {auth}"]
    lines += [f"{draw(TOKEN)}: {draw(METADATA_VALUE)}" for _ in range(draw(st.integers(0, 3)))]
    cut = draw(st.booleans())
    return ("\r\n".join(lines) + ("\r\n" if cut else "\r\n\r\n")).encode("latin-1", "replace")


def check_metrics_answer(answer: bytes) -> None:
    """What the metrics port says to a fuzzed request: nothing (the connection closed: a cut or
    slow request), or an HTTP answer that is not a server error and shows no traceback."""
    assert b"Traceback" not in answer, answer[:300]
    if not answer:
        return
    status_line = answer.split(b"\r\n", 1)[0]
    if not status_line.startswith(b"HTTP/"):
        assert b"Error response" in answer, answer[:300]  # the standard library's answer to HTTP/0.9
        return
    assert int(status_line.split()[1]) < 500, answer[:300]
