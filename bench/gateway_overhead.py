"""What REST through Envoy adds to a request over direct gRPC, client by client.

    python -m bench.gateway_overhead                         # bert-small (bench model), W3
    python -m bench.gateway_overhead --models-dir models-gpu --rounds 400

One server, one Envoy in front of it. Each round sends W3 (1 query x 8 short documents) once
per path, in turn, so every path sees the same machine state; the figure that matters is the
median of the per-round differences against direct gRPC (a difference of medians would mix in
the server's own noise). The REST paths differ only in the client: the bench's lean client
(one ``sendall``, reply read by ``Content-Length``), ``http.client`` and httpx. Writes
``bench/results/gateway.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bench import models as bench_models
from bench import results
from bench.http_client import LeanHttpClient
from bench.measure import cpu_summary
from bench.peers import API_KEY, OurServer, OursGrpc, free_port
from bench.workloads import make
from rerank.service.model_folder import find_model_folders, read_model_folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bert-small", help="bench model to build/use (ignored with --models-dir)")
    parser.add_argument("--models-dir", type=Path, help="serve the first model folder found here instead")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--variant", default="fp32-fused")
    args = parser.parse_args()

    from rerank.gateway.envoy import start as start_envoy
    from rerank.service.settings import Settings

    if args.models_dir:
        folders = find_model_folders(args.models_dir)
        if not folders:
            raise SystemExit(f"{args.models_dir}: no model folders")
        models_dir, model_name = args.models_dir, read_model_folder(folders[0]).name
    else:
        model = bench_models.ensure(args.model)
        models_dir, model_name = model.models_dir, model.name
    workload = make("W3")
    work = Path(tempfile.mkdtemp(prefix="gateway-overhead-"))
    server = OurServer(models_dir, model_name, args.variant, work)
    grpc_peer = OursGrpc(server)
    grpc_peer.start()
    rest_port = free_port()
    envoy = start_envoy(
        Settings(rest_port=rest_port, grpc_port=server.port, admin_port=free_port(), rest_host="127.0.0.1"), work
    )
    auth = {"authorization": f"Bearer {API_KEY}"}
    body = {
        "model": model_name,
        "query": workload.query,
        "documents": list(workload.documents),
        "return_documents": False,
    }
    lean = LeanHttpClient(f"http://127.0.0.1:{rest_port}", auth)
    stdlib = http.client.HTTPConnection("127.0.0.1", rest_port)
    client = httpx.Client(base_url=f"http://127.0.0.1:{rest_port}", headers=auth)

    def check(results: list) -> None:
        if len(results) != len(workload.documents):
            raise RuntimeError(f"{len(results)} results for {len(workload.documents)} documents")

    def via_stdlib() -> None:
        stdlib.request("POST", "/v1/rerank", json.dumps(body), {**auth, "content-type": "application/json"})
        reply = stdlib.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {data[:200]!r}")
        check(json.loads(data)["results"])

    def via_httpx() -> None:
        reply = client.post("/v1/rerank", json=body)
        reply.raise_for_status()
        check(reply.json()["results"])

    paths: dict[str, Callable[[], None]] = {
        "grpc (direct)": lambda: grpc_peer.score(workload.query, workload.documents),
        "rest, lean client": lambda: check(lean.post_json("/v1/rerank", body).json()["results"]),
        "rest, http.client": via_stdlib,
        "rest, httpx": via_httpx,
    }
    try:
        for call in paths.values():  # warm-up: connections, sessions, caches
            for _ in range(20):
                call()
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, call in paths.items():
                started = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - started) * 1e3)
    finally:
        lean.close()
        stdlib.close()
        client.close()
        envoy.stop()
        grpc_peer.stop()

    base = np.array(times["grpc (direct)"])
    rows = []
    print(f"\n{model_name}, W3, {args.rounds} rounds; ms")
    print(f"{'path':20s} {'p50':>8s} {'p99':>8s} {'added p50 (paired)':>20s}")
    for name, values in times.items():
        array = np.array(values)
        added = float(np.median(array - base))
        rows.append(
            {
                "path": name,
                "p50_ms": round(float(np.percentile(array, 50)), 3),
                "p99_ms": round(float(np.percentile(array, 99)), 3),
                "added_p50_ms": round(added, 3),
            }
        )
        print(f"{name:20s} {rows[-1]['p50_ms']:8.2f} {rows[-1]['p99_ms']:8.2f} {added:20.2f}")
    command = "python -m bench.gateway_overhead " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None
    )
    record = {"model": model_name, "workload": "W3", "rounds": args.rounds, "rows": rows}
    out = results.save("gateway", {"date": results.now(), "command": command, "cpu": cpu_summary(), **record})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
