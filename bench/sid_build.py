"""Semantic ID index at scale: build time and peak memory, add_items throughput, valid_next latency.

    .venv/bin/python bench/sid_build.py [--items 1000000 --dim 64 --levels 3 --codes 256 --threads 2]

Synthetic clustered embeddings (Gaussian blobs). Prints the figures and writes
bench/results/sid_build.json. Peak memory: the process's maximum resident set size (ru_maxrss, which
includes faiss's C++ buffers) before and after the build, and the tracemalloc peak of Python/NumPy
allocations during the build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

import faiss
import numpy as np
import torch

from hsrl.sid import SemanticIDIndex

RESULTS = Path(__file__).resolve().parent / "results"


def clustered(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blobs with uneven sizes (Zipf-like weights), float32, made in chunks (low peak memory)."""
    centres = rng.standard_normal((clusters, dim), dtype=np.float32) * 3.0
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    which = rng.choice(clusters, size=n, p=weights / weights.sum())
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 1 << 16):
        hi = min(n, lo + (1 << 16))
        out[lo:hi] = centres[which[lo:hi]] + rng.standard_normal((hi - lo, dim), dtype=np.float32)
    return out


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """User + system CPU time of this process (a figure that other jobs on the machine do not inflate)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codes", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--balanced", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--add", type=int, default=10_000, help="items added after the build")
    ap.add_argument("--add-batch", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "sid_build.json")
    args = ap.parse_args()

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    x = clustered(args.items + args.add, args.dim, args.clusters, rng)
    base, extra = x[: args.items], x[args.items :]
    rss_before = rss_mib()

    load_before = os.getloadavg()[0]
    tracemalloc.start()
    t0, c0 = time.perf_counter(), cpu_seconds()
    index = SemanticIDIndex.build(base, levels=args.levels, codes=args.codes, balanced=args.balanced, seed=args.seed)
    build_s, build_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = rss_mib()
    stats = index.stats()

    t0 = time.perf_counter()
    for start in range(0, args.add, args.add_batch):
        index.add_items(extra[start : start + args.add_batch])
    add_s = time.perf_counter() - t0

    # valid_next latency: 32 users x 16 beams = 512 prefixes per level, real prefixes of live items;
    # one torch thread: a 512-row gather gains nothing from threads, and on a busy machine every
    # multi-threaded op can wait a whole scheduler slice for its second thread
    torch.set_num_threads(1)
    latency_ms = {}
    items = torch.from_numpy(rng.choice(index.n_items, size=512, replace=False))
    sids = index.sid_of(items)
    for level in range(index.depth):
        prefix = sids[:, :level].contiguous()
        for _ in range(20):  # warm-up: caches, and faiss's OpenMP threads stop spinning
            index.valid_next(prefix)
        times = []
        for _ in range(100):
            t0 = time.perf_counter()
            index.valid_next(prefix)
            times.append((time.perf_counter() - t0) * 1e3)
        latency_ms[f"level{level}"] = {"median": statistics.median(times), "min": min(times)}
    t0 = time.perf_counter()
    for _ in range(50):
        index.item_of(sids)
    item_of_ms = (time.perf_counter() - t0) / 50 * 1e3

    result = {
        "items": args.items,
        "dim": args.dim,
        "levels": args.levels,
        "codes": args.codes,
        "balanced": args.balanced,
        "threads": args.threads,
        "build_seconds": build_s,
        "build_cpu_seconds": build_cpu,
        "load_average_before_build": load_before,
        "peak_rss_mib_before_build": rss_before,
        "peak_rss_mib_after_build": rss_after,
        "build_rss_increase_mib": rss_after - rss_before,
        "build_tracemalloc_peak_mib": traced_peak / 2**20,
        "add_items": args.add,
        "add_batch": args.add_batch,
        "add_items_per_second": args.add / add_s,
        "valid_next_ms_batch512": latency_ms,
        "item_of_ms_batch512": item_of_ms,
        "stats": stats,
        "stats_after_add": {
            k: v for k, v in index.stats().items() if k in ("active_items", "spilled_items", "collision_rate")
        },
        "machine": {"python": platform.python_version(), "faiss": faiss.__version__, "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("stats", "machine")}, indent=2))
    keys = ("collision_rate", "max_group_size", "unique_sid_ratio", "reconstruction_error", "disambiguation_capacity")
    print({k: stats[k] for k in keys})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
