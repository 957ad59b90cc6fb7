"""The run directory's read-only artefacts are read once per process, and again when they change."""

from __future__ import annotations

import os

import pytest

from hsrl import rundir
from hsrl.config import load_run_config
from hsrl.rundir import RunDir
from hsrl.workflow import evaluate_agents


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(rundir, "_CACHE", {})
    monkeypatch.setattr(rundir, "LOADS", rundir.Counter())
    return rundir


def test_evaluating_many_agent_seeds_reads_dataset_and_simulator_once(cli, tiny_sets, tmp_path, fresh_cache):
    run = tmp_path / "run"
    assert cli("data", "prepare", "--out", run, *tiny_sets).code == 0
    assert cli("simulator", "train", run, *tiny_sets).code == 0
    fresh_cache.LOADS.clear()
    cfg = load_run_config(run)
    # 3 agents x 3 seeds x 2 judges = 18 environments (and the agents' own needs: popularity, oracle)
    payload = evaluate_agents(run, cfg, ["random", "popular", "oracle"], 3, ["simulator", "true"], 4)
    assert set(payload["aggregate"]) == {"simulator", "true"}
    assert fresh_cache.LOADS == {"dataset": 1, "simulator": 1, "world": 1}, fresh_cache.LOADS


def test_a_rewritten_artefact_is_read_again(cli, tiny_sets, tmp_path, fresh_cache):
    run = tmp_path / "run"
    assert cli("data", "prepare", "--out", run, *tiny_sets).code == 0
    first = RunDir(run).dataset()
    assert RunDir(run).dataset() is first and fresh_cache.LOADS["dataset"] == 1
    stat = (run / "data" / "dataset.npz").stat()
    os.utime(run / "data" / "dataset.npz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "rewritten"
    assert RunDir(run).dataset() is not first and fresh_cache.LOADS["dataset"] == 2


def _imports(tree) -> list[tuple[str, bool]]:
    """(hsrl module imported, at module level?) for every import of an hsrl module in a parsed file."""
    import ast

    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hsrl"):
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names if a.name.startswith("hsrl")]
    return found


def test_the_house_reads_one_way_without_import_cycles():
    """commands -> pipeline (workflow, RunDir) -> library: no library module imports the pipeline or the
    commands (not even lazily), and module-level imports between hsrl modules have no cycle."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "src" / "hsrl"
    pipeline = ("hsrl.workflow", "hsrl.commands", "hsrl.cli")
    graph: dict[str, set[str]] = {}
    upstream = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        imports = _imports(tree)
        graph[rel] = {m for m, top in imports if top and m != rel}
        if not rel.startswith(pipeline) and rel != "hsrl.__main__":
            upstream += [(rel, m) for m, _ in imports if m.startswith(pipeline)]
    assert not upstream, f"library modules importing the pipeline or commands: {upstream}"

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(node) :] + [node])}")
        if node in done or node not in graph:
            return
        for child in graph[node]:
            visit(child, [*stack, node], done)
        done.add(node)

    done: set[str] = set()
    for module in graph:
        visit(module, [], done)
