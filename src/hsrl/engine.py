"""Where independent jobs run: local worker processes (default) or Ray.

``compare``'s agent x seed trainings and ``tune``'s trials are independent, CPU-bound and small (one
torch thread each), so they run side by side, one per core. ``local`` uses a process pool on this
machine; ``ray`` submits the same functions as Ray tasks, on a local Ray instance sized to ``workers``
or on an existing cluster (``address``, or the ``RAY_ADDRESS`` variable). Either way a job reads and
writes the run directory only, which must therefore be on a file system every worker sees (the same
path on every node of a cluster). Ray is an optional extra: ``pip install -e '.[scale]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from hsrl.errors import ConfigError

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")


def default_workers(requested: int = 0) -> int:
    """``requested`` workers, or one per CPU core when 0."""
    return requested if requested > 0 else (os.cpu_count() or 1)


def _one_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` with one torch thread: the workers share the cores (a thread each is fastest here)."""
    import torch

    torch.set_num_threads(1)
    return fn(*args)


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install -e '.[scale]' (make setup installs it)") from None
    return ray


class Pool:
    """Up to ``workers`` jobs at a time, submitted one by one (``tune`` asks for a trial's values only when
    a worker is free, so that the sampler learns from the trials already finished)."""

    def __init__(self, workers: int = 0, engine: str = "local", address: str | None = None) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine '{engine}' (expected {' or '.join(ENGINES)})")
        self.requested, self.workers, self.engine = workers, default_workers(workers), engine
        self.address = address or os.environ.get("RAY_ADDRESS")
        self._pending: dict[Any, int] = {}
        self._inline: list[tuple[int, Any]] = []  # results of jobs run in this process (one worker)
        self._count = 0
        self._pool: Any = None
        self._ray: Any = None
        self._started_ray = False

    def __enter__(self) -> Pool:
        if self.engine == "ray":
            ray = self._ray = require_ray()
            if not ray.is_initialized():
                options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
                if self.address:
                    ray.init(address=self.address, **options)
                else:  # a private local instance with as many CPUs as workers: one job per CPU
                    ray.init(num_cpus=self.workers, **options)
                self._started_ray = True
            if self.requested <= 0:  # one job per CPU of the cluster (or of the local instance)
                self.workers = max(1, int(ray.cluster_resources().get("CPU", self.workers)))
            self._task = ray.remote(num_cpus=1)(_one_thread)
        elif self.workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._started_ray:
            self._ray.shutdown()

    @property
    def busy(self) -> int:
        return len(self._pending) + len(self._inline)

    @property
    def free(self) -> bool:
        return self.busy < self.workers

    def submit(self, fn: Callable[..., Any], *args: Any) -> int:
        """Start ``fn(*args)`` (a module-level function: it is sent to another process); its job number."""
        number, self._count = self._count, self._count + 1
        if self.engine == "ray":
            self._pending[self._task.remote(fn, *args)] = number
        elif self._pool is not None:
            self._pending[self._pool.submit(_one_thread, fn, *args)] = number
        else:  # one worker: in this process (simplest to debug; the tests can patch what a job calls)
            self._inline.append((number, fn(*args)))
        return number

    def next_done(self) -> tuple[int, Any]:
        """Wait for a job to finish: (its number, its result); its exception is raised here."""
        if self._inline:
            return self._inline.pop(0)
        if not self._pending:
            raise RuntimeError("no job is running")
        if self.engine == "ray":
            done, _ = self._ray.wait(list(self._pending), num_returns=1)
            ref = done[0]
            return self._pending.pop(ref), self._ray.get(ref)
        from concurrent.futures import FIRST_COMPLETED, wait

        finished, _ = wait(list(self._pending), return_when=FIRST_COMPLETED)
        future = next(iter(finished))
        return self._pending.pop(future), future.result()


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    workers: int = 0,
    engine: str = "local",
    address: str | None = None,
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(*args)`` for every ``args`` in ``jobs``; yields ``(job number, result)`` as jobs finish.

    ``fn`` must be importable by name (a module-level function): it is sent to other processes."""
    if not jobs:
        return
    # on Ray with no count given: as many at once as the cluster has CPUs (the Pool asks it)
    size = workers if engine == "ray" and workers <= 0 else min(len(jobs), default_workers(workers))
    with Pool(size, engine, address) as pool:
        queue = list(jobs)
        while queue or pool.busy:
            while queue and pool.free:
                pool.submit(fn, *queue.pop(0))
            yield pool.next_done()
