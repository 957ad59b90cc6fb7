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
    fresh_cache._CACHE.clear()  # the stages above share what they read too: start cold
    cfg = load_run_config(run)
    cfg.eval.jobs = 1  # in this process, where the counts are kept (each worker process reads once too)
    # 3 agents x 3 seeds x 2 judges = 18 environments (and the agents' own needs: popularity, oracle)
    payload = evaluate_agents(run, cfg, ["random", "popular", "oracle"], 3, ["simulator", "true"], 4)
    assert set(payload["aggregate"]) == {"simulator", "true"}
    assert fresh_cache.LOADS == {"dataset": 1, "simulator": 1, "world": 1}, fresh_cache.LOADS
    # the same jobs on two worker processes give the same figures, in the same order
    cfg.eval.jobs = 2
    side_by_side = evaluate_agents(run, cfg, ["random", "popular", "oracle"], 3, ["simulator", "true"], 4)
    assert side_by_side["per_seed"] == payload["per_seed"]
    assert [r["seed"] for r in payload["per_seed"]["true"]["oracle"]] == [0, 1, 2]


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


# the layers: commands (parse options, render) -> pipeline (RunDir, the workflow stages, tuning, the job
# engine) -> library. ``hsrl`` itself (the top-level API) and ``hsrl.__main__`` sit above them all.
COMMANDS = ("hsrl.commands", "hsrl.cli")
PIPELINE = ("hsrl.rundir", "hsrl.workflow", "hsrl.tuning", "hsrl.engine")
TOP = ("hsrl", "hsrl.__main__")
# the one way up from the library, on purpose: the run-taking entry points (make_env, SlateEnv.from_run
# and the gymnasium / TorchRL adapters that call it) resolve the run directory through RunDir.env, lazily
RUN_ENTRY_POINTS = {("hsrl.simulator.env", "hsrl.rundir")}


def _layer(module: str, layer: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in layer)


def test_the_house_reads_one_way_without_import_cycles():
    """commands -> pipeline (RunDir, workflow, tuning, engine) -> library: no library module imports the
    pipeline or the commands (not even lazily, but the run-taking entry point of the environments), the
    pipeline never imports the commands, and module-level imports between hsrl modules have no cycle."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "src" / "hsrl"
    graph: dict[str, set[str]] = {}
    upstream, pipeline_up = [], []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        imports = _imports(tree)
        graph[rel] = {m for m, top in imports if top and m != rel}
        if rel in TOP or _layer(rel, COMMANDS):
            continue
        if _layer(rel, PIPELINE):
            pipeline_up += [(rel, m) for m, _ in imports if _layer(m, COMMANDS)]
            continue
        upstream += [
            (rel, m) for m, _ in imports if _layer(m, PIPELINE + COMMANDS) and (rel, m) not in RUN_ENTRY_POINTS
        ]
    assert "hsrl.workflow.stages" in graph and "hsrl.rundir" in graph  # the layers were found
    assert not upstream, f"library modules importing the pipeline or commands: {upstream}"
    assert not pipeline_up, f"pipeline modules importing the commands: {pipeline_up}"

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


def test_only_the_run_directory_knows_the_layout():
    """No library module reads the run's saved config (RunDir.config does, for the pipeline)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "src" / "hsrl"
    readers = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        if rel in TOP or _layer(rel, COMMANDS + PIPELINE) or rel == "hsrl.config":
            continue
        if "load_run_config" in path.read_text():
            readers.append(rel)
    assert not readers, f"library modules reading the run's config: {readers}"


def test_each_device_has_its_own_simulator_copy(cli, tiny_sets, tmp_path, fresh_cache):
    """A model shared by environments is never moved under them (make_env on another device)."""
    run = tmp_path / "run"
    assert cli("data", "prepare", "--out", run, *tiny_sets).code == 0
    assert cli("simulator", "train", run, *tiny_sets).code == 0
    on_cpu = RunDir(run).simulator()
    elsewhere = RunDir(run).simulator(device="meta")
    assert elsewhere is not on_cpu and next(elsewhere.parameters()).device.type == "meta"
    assert next(on_cpu.parameters()).device.type == "cpu" and RunDir(run).simulator() is on_cpu


def test_old_configs_and_agent_files_still_load(cli, tiny_sets, tmp_path):
    """A config.yaml and an agent.pt written by hsrl before the per-agent sections / checkpoint v2."""
    import torch
    import yaml

    from hsrl.config import OLD_BASELINE_DEFAULTS
    from hsrl.rundir import RunDir as Run
    from hsrl.workflow import env_for, load_agent

    run = tmp_path / "run"
    assert cli("data", "prepare", "--out", run, *tiny_sets).code == 0
    assert (
        cli("compare", run, "--agents", "hsrl", *tiny_sets, "--set", "eval.seeds=1", "--set", "eval.jobs=1").code == 0
    )
    tree = yaml.safe_load(Run(run).config_file.read_text())
    tree["agent"]["baseline"] = dict(OLD_BASELINE_DEFAULTS)  # what an older hsrl saved
    for section in ("sl", "a2c", "ddpg", "td3", "hac"):
        tree["agent"].pop(section)
    Run(run).config_file.write_text(yaml.safe_dump(tree))
    cfg = load_run_config(run)  # no error: every old key was at its default
    path = run / "agents" / "hsrl" / "seed0" / "agent.pt"
    blob = torch.load(path, weights_only=True)
    env = env_for(run, cfg, "test", 0)
    expected = load_agent("hsrl", run, cfg, env, 0).act(env.reset(seed=3))
    torch.save({"version": 1, "agent": "hsrl", "state": blob["state"]}, path)  # the old format: state only
    again = load_agent("hsrl", run, cfg, env, 0).act(env.reset(seed=3))
    assert torch.equal(expected, again)


def test_a_run_directory_given_for_a_dataset_folder_is_refused_not_emptied(cli, tiny_sets, tmp_path, fresh_cache):
    """The library takes folders and files; a run directory passed where its parts were meant (the old
    call forms) is a located error, and ``save`` never replaces a run directory with a dataset."""
    from hsrl.data.synthetic import SyntheticWorld
    from hsrl.errors import ArtifactError

    run = tmp_path / "run"
    assert cli("data", "prepare", "--out", run, *tiny_sets).code == 0
    before = sorted(p.name for p in run.iterdir())
    dataset = RunDir(run).dataset()
    with pytest.raises(ArtifactError, match="not a dataset folder"):
        dataset.save(run)
    assert sorted(p.name for p in run.iterdir()) == before and (run / "config.yaml").is_file()
    with pytest.raises(ArtifactError, match="the dataset folder is"):
        type(dataset).load(run)
    with pytest.raises(ArtifactError, match="give the world file itself"):
        SyntheticWorld.load(run)
    assert str(RunDir(run)) == str(run)  # messages built from a RunDir name a path one can paste
    dataset.save(run / "data")  # its own folder: replaced in place
    assert type(dataset).load(run / "data").n_items == dataset.n_items


def test_saved_config_is_read_back_after_each_write(tmp_path, fresh_cache):
    run = RunDir(tmp_path / "run")
    cfg = run.config()
    for seed in (1, 2, 3):  # several writes in one clock tick must not return a stale cached copy
        cfg.sid.seed = seed
        run.save_config(cfg)
        assert run.config().sid.seed == seed


def test_a_simulator_key_added_later_reads_as_its_old_value_once_the_run_has_a_simulator(
    tmp_path, fresh_cache, monkeypatch
):
    import yaml

    from hsrl import config

    # pretend satiation_lr's old behaviour was 0.5: a saved config without the key is today's default
    # until the run has a simulator checkpoint, which was trained without it
    monkeypatch.setitem(config.ADDED_WITH_OLD_BEHAVIOUR, "simulator", {"satiation_lr": 0.5})
    run = RunDir(tmp_path / "run")
    path = run.save_config(run.config())
    tree = yaml.safe_load(path.read_text())
    del tree["simulator"]["satiation_lr"]
    path.write_text(yaml.safe_dump(tree))
    assert run.config().simulator.satiation_lr == config.SimulatorConfig().satiation_lr
    run.simulator_file().parent.mkdir(parents=True)
    run.simulator_file().write_bytes(b"a checkpoint")
    assert run.config().simulator.satiation_lr == 0.5
    assert run.config(["simulator.dim=16"]).simulator.satiation_lr == 0.5
