"""Inference runs below the rest of the replica's scheduling priority.

A replica saturates its cores with inference on purpose; the event loop that answers Envoy's
admission check, health and the calls' I/O needs a little CPU now and then, and should get it
before inference does rather than share the cores fairly with it. So inference threads (the
runtime's own pools, which inherit the priority of the thread that creates them, and the worker
threads that call the runtime) run ``nice`` steps lower: they still get every cycle nothing else
wants. Raising one's own niceness needs no privilege; where the kernel refuses anyway, the
replica runs as before and says so. Niceness orders threads within one CPU group (a container's
cgroup; outside containers, the session under the kernel's autogroup): ``rerank-stack`` keeps
Envoy and its replicas in its own session for that (:mod:`rerank.gateway.processes`). What it
buys is measured in docs/performance.md#overload.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_NICE = 19


def lower_current_thread(nice: int) -> None:
    """Makes the calling thread ``nice`` steps nicer (Linux: niceness is per thread); threads it
    creates from now on inherit that."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, current + nice))
    except OSError as exc:
        log.warning("inference keeps the replica's priority: cannot lower a thread's (%s)", exc)


def run_lowered(nice: int, fn: Callable[[], T]) -> T:
    """Runs ``fn`` on a new thread ``nice`` steps nicer and returns what it returns (or raises
    what it raises): the thread pools ``fn`` creates (a runtime compiling a model) inherit the
    lower priority."""
    with ThreadPoolExecutor(1, thread_name_prefix="load", initializer=lower_current_thread, initargs=(nice,)) as pool:
        return pool.submit(fn).result()
