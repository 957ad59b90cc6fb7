"""How a pipeline stage tells what it is doing without printing: a ``Progress`` object whose hooks the
stage calls. The default says nothing (the Python API, the tests, worker processes); the commands pass
one that renders with rich (``hsrl.commands.common.console_progress()``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hsrl.config import RunConfig

Kind = Literal["info", "warning", "skip", "done"]


@dataclass
class StageReport:
    """What a stage did: the files of its artefact, written (or found and kept: ``skipped``), the config
    it ran under (saved in the run where the stage saves it), what it has to say (``details``: the
    dataset summary, the index statistics, the fidelity report) and the artefact itself where it is
    loaded (``value``)."""

    stage: str
    files: list[Path]
    skipped: bool
    config: RunConfig
    details: dict[str, Any] = field(default_factory=dict)
    value: Any = None

    @property
    def path(self) -> Path:
        """The artefact's main file or folder."""
        return self.files[0]


@dataclass
class Results:
    """An evaluation's payload and the files it was written to."""

    payload: dict[str, Any]
    paths: dict[str, Path]


class Counter:
    """A counted step (epochs, agent-seeds): ``advance`` one with a status, ``reset`` for another round,
    ``note`` a line beside it."""

    def advance(self, status: str = "") -> None:
        pass

    def reset(self, status: str = "") -> None:
        pass

    def note(self, text: str, kind: Kind = "info") -> None:
        pass


class Progress:
    """The hooks a stage calls while it works; this one shows nothing. ``show_bars``: the trainer's own
    progress bar (``hsrl.train.loop.Trainer(show_progress=...)``) for agents trained in this process."""

    show_bars = False

    def note(self, text: str, kind: Kind = "info") -> None:
        """A line worth showing: a stage built on demand, a warning, an artefact skipped or written."""

    @contextmanager
    def working(self, text: str) -> Iterator[None]:
        """A long step without a count (reading the logs, building the index, evaluating)."""
        yield

    @contextmanager
    def counting(self, text: str, total: int) -> Iterator[Counter]:
        """A step of ``total`` counted parts."""
        yield Counter()

    def finished(self, report: StageReport) -> None:
        """A stage that another one built on demand is done (``ensure_stages``): its report, to show."""


SILENT = Progress()
