"""hsrl tune: search spaces, selection on validation users only, resumable studies, --tuned, Ray."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import yaml
from conftest import TINY_RUN

from hsrl import tuning, workflow
from hsrl.agents import registry
from hsrl.config import load_config
from hsrl.errors import ConfigError
from hsrl.rundir import RunDir

SPACES = sorted(tuning.SEARCH_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A prepared tiny synthetic run with its simulator and SID index (shared by this module's tests)."""
    from hsrl.cli import main

    run = tmp_path_factory.mktemp("tune") / "run"
    sets = [x for s in TINY_RUN for x in ("--set", s)]
    assert main(["data", "prepare", "--dataset", "synthetic", "--out", str(run), *sets]) == 0
    assert main(["simulator", "train", str(run)]) == 0
    assert main(["sid", "build", str(run)]) == 0
    return run


def tiny_cfg(run):
    return load_config([RunDir(run).config_file])


def test_every_learned_agent_has_a_search_space_and_every_key_is_a_real_option():
    cfg = load_config()
    names = {p.stem for p in SPACES}
    assert set(registry.learned_names()) <= names, "a learned agent without a search space"
    for path in SPACES:
        space = tuning.load_space(path, path.stem, cfg)
        assert space, path
        defaults = tuning.current_values(path.stem, space, cfg)
        for key, param in space.items():
            path_in_config = registry.option_path(cfg.agent, path.stem, key)
            node = cfg.agent
            for part in path_in_config:
                assert part in type(node).model_fields, f"{path}: {key} -> agent.{'.'.join(path_in_config)}"
                node = getattr(node, part)
            value = defaults[key]  # trial 0 is the default: it must lie in the space
            if param.choices is not None:
                assert value in param.choices, (path, key, value)
            else:
                assert param.low <= value <= param.high, (path, key, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("actor_lr: {low: 1.0e-4, high: 1.0e-2}\nnot_a_field: {low: 0, high: 1}\n", "not_a_field"),
        ("actor_lr: {low: 1.0e-2, high: 1.0e-4}\n", "low < high"),
        ("actor_lr: {low: -1.0, high: 1.0}\n", "not a valid value"),
        ("actor_lr: {low: 0.0, high: 1.0, log: true}\n", "low > 0"),
        ("actor_lr: {low: 1.0e-4, high: 1.0e-2, step: 2}\n", "unknown field"),
        ("hyper_coef: {choices: []}\n", "non-empty list"),
        ("- actor_lr\n", "mapping"),
    ],
)
def test_bad_search_space_files_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "hac.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        tuning.load_space(path, "hac", load_config())
    assert str(path) in str(err.value)


def test_tuned_flag_in_specs_and_missing_values_are_clear():
    assert registry.parse_agent("hac:tuned+noise=0.2") == ("hac", {"tuned": "true", "noise": "0.2"})
    assert tuning.tuned_specs(["hsrl", "hac:noise=0.2", "random", "sl:tuned"]) == [
        "hsrl:tuned",
        "hac:tuned+noise=0.2",
        "random",
        "sl:tuned",
    ]
    cfg = load_config()
    with pytest.raises(ConfigError, match="hsrl tune RUN --agent hac"):
        registry.agent_config("hac:tuned", cfg)
    tuned = cfg.model_copy(update={"tuned": {"hac": {"actor_lr": 3e-4, "hyper_coef": 3.0}}})
    agent_cfg = registry.agent_config("hac:tuned+hyper_coef=10", tuned)  # the spec's option wins
    assert (agent_cfg.hac.actor_lr, agent_cfg.hac.hyper_coef) == (3e-4, 10.0)
    assert cfg.agent.hac.actor_lr != 3e-4  # the run's own config is untouched


def test_selection_never_reads_test_users_the_judge_or_the_true_world(tiny_run, monkeypatch):
    """Every environment a study builds is a training or validation one, in the training simulator."""
    from hsrl.data.schema import LogDataset
    from hsrl.rundir import LOADS

    seen: list[tuple[str, str]] = []
    real = RunDir.env  # every environment of a run is built there (make_env and the workflow's env_for)

    def spy(self, split="test", world="simulator", *args, **kwargs):
        seen.append((split, world))
        return real(self, split, world, *args, **kwargs)

    monkeypatch.setattr(RunDir, "env", spy)

    splits: list[str] = []
    for method in ("users_in", "rows_in"):  # any read of a split's users or logged rows
        real_method = getattr(LogDataset, method)
        monkeypatch.setattr(
            LogDataset, method, lambda self, split, _m=real_method: splits.append(split) or _m(self, split)
        )
    before = dict(LOADS)
    report = tuning.tune(tiny_run, tiny_cfg(tiny_run), "sl", trials=2, workers=1, episodes=8)
    assert seen, "the study built no environment"
    assert {split for split, _ in seen} <= {"train", "val"}
    assert {world for _, world in seen} == {"simulator"}
    assert splits and "test" not in splits
    assert LOADS["judge"] == before.get("judge", 0) and LOADS["world"] == before.get("world", 0)  # never loaded
    assert report["study"]["complete"] + report["study"]["pruned"] == 2


def test_a_study_starts_from_the_defaults_writes_the_best_and_resumes(tiny_run):
    cfg = tiny_cfg(tiny_run)
    run = RunDir(tiny_run)
    report = tuning.tune(tiny_run, cfg, "hac", trials=2, workers=1, episodes=8)
    trials = json.loads((run.tuned_dir / "hac.trials.json").read_text())
    assert len(trials) == 2
    defaults = {k: registry.option_value(cfg.agent, "hac", k) for k in trials[0]["values"]}
    assert "distill" in defaults and trials[0]["values"] == defaults  # trial 0 = defaults, shared keys included
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    assert report["values"] == best["values"]
    saved = yaml.safe_load(run.tuned_file("hac").read_text())
    assert saved["values"] == best["values"] and saved["study"]["trials"] == 2
    # run again with one more trial: exactly one new trial, the first two are kept
    tuning.tune(tiny_run, cfg, "hac", trials=3, workers=1, episodes=8)
    assert len(json.loads((run.tuned_dir / "hac.trials.json").read_text())) == 3
    # the same study under another protocol is refused, not mixed
    with pytest.raises(ConfigError, match="another episodes"):
        tuning.tune(tiny_run, cfg, "hac", trials=3, workers=1, episodes=9)


def test_a_trial_cut_off_by_a_session_ending_is_run_again_with_its_values(tiny_run):
    import optuna

    cfg = tiny_cfg(tiny_run)
    run = RunDir(tiny_run)
    run.tuned_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name="a2c", storage=tuning._storage(run.study_file("a2c")), direction="maximize")
    space = tuning.load_space(tuning.space_file("a2c"), "a2c", cfg)
    study.set_user_attr("protocol", tuning._protocol(space, cfg, 0, 8, "a2c"))
    cut = study.ask()  # a trial that was running when the session ended: never told
    values = {key: param.suggest(cut) for key, param in space.items()}
    tuning.tune(tiny_run, cfg, "a2c", trials=1, workers=1, episodes=8)
    trials = json.loads((run.tuned_dir / "a2c.trials.json").read_text())
    assert [t["state"] for t in trials] == ["fail", "complete"]
    assert trials[1]["values"] == values


def test_tuned_compare_trains_with_the_chosen_values_in_their_own_folder(tiny_run, cli):
    run = RunDir(tiny_run)
    run.tuned_dir.mkdir(parents=True, exist_ok=True)
    run.tuned_file("sl").write_text(yaml.safe_dump({"agent": "sl", "values": {"lr": 0.0042}}))
    assert (
        cli("compare", tiny_run, "--agents", "sl,random", "--seeds", "1", "--world", "simulator", "--tuned").code == 0
    )
    cfg = load_config([run.config_file])
    tuned_cfg = tuning.load_tuned(tiny_run, cfg, ["sl"])
    folder = workflow.agent_dir(tiny_run, "sl:tuned", 0, tuned_cfg)
    assert folder.parent.name.startswith("sl-tuned-") and (folder / "agent.pt").is_file()
    blob = torch.load(folder / "agent.pt", map_location="cpu", weights_only=False)
    assert blob["inputs"]["config"]["sl"]["lr"] == 0.0042
    results = json.loads((run.results_dir / "results.json").read_text())
    assert "sl:tuned" in results["aggregate"]["simulator"]
    # other values -> another folder: weights trained with the old values are never reused
    retuned = tuned_cfg.model_copy(update={"tuned": {"sl": {"lr": 0.001}}})
    assert workflow.agent_dir(tiny_run, "sl:tuned", 0, retuned) != folder
    # a tuned file that does not fit the agent is named
    run.tuned_file("sl").write_text(yaml.safe_dump({"agent": "sl", "values": {"lr": -1}}))
    bad = cli("compare", tiny_run, "--agents", "sl", "--seeds", "1", "--world", "simulator", "--tuned")
    assert bad.code != 0 and str(run.tuned_file("sl")) in bad.err


def test_a_shipped_study_is_copied_into_the_run_only_under_its_own_config(tmp_path, monkeypatch):
    """`hsrl run --tuned` (make run): with no RUN/tuned/NAME.yaml, the study shipped for the dataset is
    used, and copied into the run, only if it was run under this config."""
    cfg = load_config()
    shipped = tmp_path / "shipped" / cfg.data.dataset
    shipped.mkdir(parents=True)
    study = {"agent": "hac", "values": {"actor_lr": 3e-4}, "study": {"config": tuning._config_hash(cfg, "hac")}}
    (shipped / "hac.yaml").write_text(yaml.safe_dump(study))
    (shipped / "hac.trials.json").write_text("[]")
    monkeypatch.setattr(tuning, "SHIPPED_DIR", tmp_path / "shipped")
    run = RunDir(tmp_path / "run")
    assert tuning.load_tuned(run, cfg, ["hac", "random"]).tuned == {"hac": {"actor_lr": 3e-4}}
    assert yaml.safe_load(run.tuned_file("hac").read_text()) == study
    assert (run.tuned_dir / "hac.trials.json").read_text() == "[]"
    other = cfg.model_copy(deep=True)
    other.agent.hac.noise = 0.2  # another config: the shipped values do not apply to it
    elsewhere = RunDir(tmp_path / "other")
    with pytest.raises(ConfigError, match="no tuned values for hac"):
        tuning.load_tuned(elsewhere, other, ["hac"])
    assert not elsewhere.tuned_dir.exists()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the 'scale' extra (Ray) is not installed")
def test_tune_and_compare_through_ray_on_two_local_cpus(tiny_run, cli):
    import ray

    run = RunDir(tiny_run)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # one local instance for both commands
    try:
        _tune_and_compare_through_ray(run, tiny_run, cli)
    finally:
        ray.shutdown()


def _tune_and_compare_through_ray(run, tiny_run, cli):
    assert cli("tune", tiny_run, "--agent", "ddpg", "--trials", "2", "--jobs", "2", "--engine", "ray",
               "--episodes", "8").code == 0  # fmt: skip
    saved = yaml.safe_load(run.tuned_file("ddpg").read_text())
    assert saved["study"]["complete"] + saved["study"]["pruned"] == 2
    result = cli("compare", tiny_run, "--agents", "td3,random", "--seeds", "2", "--world", "simulator",
                 "--engine", "ray", "--set", "eval.jobs=2")  # fmt: skip
    assert result.code == 0, result.err
    assert "2 Ray workers" in result.out
    for seed in (0, 1):
        assert (workflow.agent_dir(tiny_run, "td3", seed, load_config([run.config_file])) / "agent.pt").is_file()


def test_a_checkpoint_is_reused_only_under_the_config_it_was_trained_with(tiny_run, cli):
    """Changing an agent's own option (or a shared one) makes its old checkpoint an error naming the key and
    --force; another agent's section does not; the old per-coordinate DDPG key, converted, is no change."""
    args = ["compare", tiny_run, "--agents", "sl", "--seeds", "1", "--world", "simulator"]
    assert cli(*args).code == 0
    changed = cli(*args, "--set", "agent.sl.lr=0.005")
    assert changed.code != 0 and "sl.lr" in changed.err and "--force" in changed.err
    assert cli(*args, "--set", "agent.hac.actor_lr=0.005").code == 0  # not SL's: the checkpoint stands
    from hsrl.config import AgentConfig

    saved = AgentConfig().model_dump(mode="json")
    saved["ddpg"] = {k: v for k, v in saved["ddpg"].items() if k != "noise_size"} | {"noise": 0.1}
    cfg = load_config([RunDir(tiny_run).config_file], overrides=["agent.ddpg.noise_size=0.5656854249492381"])
    assert workflow.config_drift(saved, "ddpg", cfg) == []
    assert workflow.config_drift(saved, "ddpg", load_config([RunDir(tiny_run).config_file])) == ["ddpg.noise_size"]


def test_the_sid_alignment_changes_the_study_hash_of_sid_agents_only():
    cfg = load_config(overrides=["sid.align=0"])
    aligned = cfg.model_copy(update={"sid": cfg.sid.model_copy(update={"align": 3.0})})
    for agent in registry.learned_names():
        same = tuning._config_hash(aligned, agent) == tuning._config_hash(cfg, agent)
        assert same != registry.get(agent).uses_index, agent  # hsrl and grpo read the SIDs
    # at its old behaviour (0) the key is not in the hash at all: studies from before it still match
    assert "align" not in tuning.protocol_config(cfg, "hsrl")["sid"]
    assert tuning.protocol_config(aligned, "hsrl")["sid"]["align"] == 3.0


def test_every_shipped_study_applies_to_its_datasets_shipped_config():
    """configs/tuned/DATASET/ holds studies run under the config shipped for DATASET (the default for
    synthetic, configs/ml100k.yaml for MovieLens): `--tuned` adopts them only while that stays so."""
    configs = {"synthetic": load_config(), "ml-100k": load_config([tuning.SEARCH_DIR.parent / "ml100k.yaml"])}
    shipped = sorted(tuning.SHIPPED_DIR.glob("*/*.yaml"))
    assert {path.parent.name for path in shipped} == set(configs)
    for path in shipped:
        study = yaml.safe_load(path.read_text())
        cfg = configs[path.parent.name]
        assert study["study"]["config"] == tuning._config_hash(cfg, study["agent"]), path
    for dataset in configs:  # every learned agent has a study for each dataset
        assert {p.stem for p in (tuning.SHIPPED_DIR / dataset).glob("*.yaml")} == set(registry.learned_names())
