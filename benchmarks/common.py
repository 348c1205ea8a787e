"""Shared bits of the benchmarks: environment record, timing, JSON/PNG output."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform

import torch


def environment() -> dict:
    import triton

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=p.name, sms=p.multi_processor_count, cuda=torch.version.cuda)
    return env


def median_ms(fn, rep_ms: int = 100) -> float:
    """Median GPU time of ``fn`` in ms: captured in a CUDA graph and timed over its replays
    (triton.testing.do_bench_cudagraph), so Python launch overhead, which a real model removes
    with CUDA graphs too, does not swamp small problems. Same method for every contender."""
    import triton.testing

    return float(triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))


@contextlib.contextmanager
def pinned_matmul_tile(dtype: torch.dtype, cfg, tall=None):
    """Run invariant_matmul with one tile config for every M (both launch shapes set to ``cfg``),
    to time or compile one candidate; or, with ``tall``, a pair of launch shapes (the short
    ``cfg`` and ``tall``) chosen per call as the shipped pair is."""
    from inductor_bi.kernels import matmul_table

    saved = matmul_table.MATMUL_CUDA[dtype], matmul_table.MATMUL_CUDA_TALL.get(dtype)
    matmul_table.MATMUL_CUDA[dtype], matmul_table.MATMUL_CUDA_TALL[dtype] = cfg, tall or cfg
    try:
        yield
    finally:
        matmul_table.MATMUL_CUDA[dtype] = saved[0]
        if saved[1] is None:
            matmul_table.MATMUL_CUDA_TALL.pop(dtype)
        else:
            matmul_table.MATMUL_CUDA_TALL[dtype] = saved[1]


def knob_values(spec: str) -> dict:
    """Kernel knob values from ``NAME`` (on = True), ``NAME=VALUE`` (an int; ``=0`` turns a
    shipped-on knob off) or several joined by commas, for ``inductor_bi.kernels.knobs.overridden``."""
    return {name: int(value) if value else True for name, _, value in (part.partition("=") for part in spec.split(","))}


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    print(f"wrote {path}")


def median_wall_ms(fn, repeats: int, warmup: int = 2, setup=None, sync=None) -> float:
    """Median wall time in ms of ``fn()`` as a user's call sees it, host included: each sample is
    (sync; t0; fn(); sync; t1), after ``warmup`` untimed calls. ``setup`` runs before every call,
    outside the window (e.g. rewind a KV cache); ``sync`` defaults to torch.cuda.synchronize
    when CUDA is available."""
    import statistics
    import time

    if sync is None:
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    samples = []
    for i in range(warmup + repeats):
        if setup is not None:
            setup()
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        t1 = time.perf_counter()
        del out
        if i >= warmup:
            samples.append((t1 - t0) * 1e3)
    return float(statistics.median(samples))


def cold_compile_caches(tag: str) -> None:
    """Point Inductor's and Triton's on-disk caches at fresh folders, as on a fresh machine: a
    cache left by an earlier compile (another contender shares pointwise kernels) would time
    loading, not compiling. Both caches read these variables when they are used."""
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"inductor_{tag}_")
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"triton_{tag}_")


def merge_rows(old: list[dict], new: list[dict], key) -> list[dict]:
    """``old`` rows with those ``new`` replaces (same ``key(row)``) dropped, then ``new``: two runs
    over different subsets build one table, a rerun of a subset replaces its rows."""
    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + list(new)
