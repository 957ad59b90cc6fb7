"""Train the response model on several processes with torch.distributed (DDP) — for logs too large
for one process's time.

Two ways in, one training function (``train_response_model``, which shards rows by rank):
- ``hsrl simulator train RUN --nproc N`` spawns N local worker processes (``train_distributed``);
- ``torchrun --nproc-per-node N -m hsrl simulator train RUN`` (or any launcher that sets RANK,
  WORLD_SIZE, MASTER_ADDR, MASTER_PORT) makes every process join the group (``join_launched_group``);
  rank 0 writes the artefacts.
Backend: gloo on CPU, NCCL when every rank has a CUDA device of its own.
"""

from __future__ import annotations

import os
import queue as queue_lib
import socket
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from hsrl.config import SimulatorConfig
from hsrl.errors import ArtifactError, ConfigError
from hsrl.simulator.response import DatasetShape, EpochStats, UserResponseModel

RESULT_FILE = "rank0.pt"


# a rank that waits longer than this for the others (one died, or hangs) fails instead of waiting forever
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


def backend_and_device(local_rank: int = 0, local_world: int = 1) -> tuple[str, torch.device]:
    """One policy for every rank (and for one process): NCCL and a GPU each when the machine has one per
    local process, else gloo on the CPU. Decided from the local world size, never per rank, so that all
    ranks agree on the backend."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world:
        return "nccl", torch.device("cuda", local_rank)
    return "gloo", torch.device("cpu")


def launched_world_size() -> int:
    """The WORLD_SIZE a launcher such as torchrun set for this process (1 when none did)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def join_launched_group() -> tuple[int, torch.device]:
    """Join the process group a launcher described in the environment; returns (rank, device)."""
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", launched_world_size()))
    backend, device = backend_and_device(int(os.environ.get("LOCAL_RANK", rank)), local_world)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    return rank, device


def leave_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, data_dir: str, config: dict, out: str, events: Any) -> None:
    """One rank: join the group, train on its shard, rank 0 saves the best weights for the parent."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))  # fmt: skip
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        from hsrl.data.schema import LogDataset
        from hsrl.simulator.response import train_response_model

        _, device = join_launched_group()
        ds = LogDataset.load(data_dir)
        on_epoch = (lambda stats: events.put(("epoch", stats))) if rank == 0 else None
        model, summary = train_response_model(ds, SimulatorConfig.model_validate(config), on_epoch, device)
        if rank == 0:
            shape = asdict(DatasetShape.of(ds))
            torch.save({"state_dict": model.state_dict(), "summary": summary, "shape": shape}, Path(out) / RESULT_FILE)
        leave_group()
    except BaseException as exc:  # reported by the parent with the rank; no traceback for the user
        events.put(("error", f"rank {rank}: {type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None


def train_distributed(
    data_dir: str | Path,
    config: SimulatorConfig,
    nproc: int,
    on_epoch: Callable[[EpochStats], None] | None = None,
    scratch_dir: str | Path | None = None,
) -> tuple[UserResponseModel, dict[str, Any]]:
    """Train on ``nproc`` local processes (DDP, one shard of the rows each) on the dataset folder
    ``data_dir`` (each worker reads it); returns rank 0's model and summary, exactly what
    ``train_response_model`` returns in one process. The calling process does not need the dataset
    meanwhile (on a large log, one copy fewer in memory). Rank 0 hands its weights back through a
    temporary folder inside ``scratch_dir`` (default: the system's temporary directory)."""
    import torch.multiprocessing as mp

    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: expected at least 1 process")
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix=".ddp-", dir=scratch_dir) as out:
        procs = [
            ctx.Process(
                target=_worker, args=(r, nproc, port, str(data_dir), config.model_dump(mode="json"), out, events)
            )
            for r in range(nproc)
        ]
        errors: list[str] = []
        try:
            for p in procs:
                p.start()
            while any(p.is_alive() for p in procs) or not events.empty():
                try:
                    kind, value = events.get(timeout=0.2)
                except queue_lib.Empty:
                    if errors or any(p.exitcode not in (None, 0) for p in procs):
                        break  # a rank died: the others would wait for it until the collective timeout
                    continue
                if kind == "epoch" and on_epoch is not None:
                    on_epoch(value)
                elif kind == "error":
                    errors.append(value)
        finally:  # also on Ctrl-C: no rank outlives the command (nor its exchange folder)
            for p in procs:
                if p.is_alive():
                    p.terminate()
                if p.pid is not None:
                    p.join()
        if errors or any(p.exitcode != 0 for p in procs):
            detail = "; ".join(errors) or ", ".join(f"rank {r} exited with {p.exitcode}" for r, p in enumerate(procs))
            raise ArtifactError(f"distributed simulator training failed: {detail}")
        payload = torch.load(Path(out) / RESULT_FILE, map_location="cpu", weights_only=True)
    model = UserResponseModel(DatasetShape(**payload["shape"]), config)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload["summary"]
