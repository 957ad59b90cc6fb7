"""Catalogue churn: the held-out draw, the catalogue view, restricted logs, `hsrl churn` end to end, the judge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hsrl.agents.supervised import LoggedSlates
from hsrl.data.schema import PAD
from hsrl.eval.churn import HeldOut
from hsrl.simulator.catalogue import CatalogueView
from hsrl.simulator.observation import Observation


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny synthetic run directory (data, world, simulator, SIDs), built once for this module."""
    from conftest import TINY_RUN

    from hsrl.cli import main

    out = tmp_path_factory.mktemp("churn") / "run"
    sets = [x for s in TINY_RUN for x in ("--set", s)]
    assert main(["run", "--out", str(out), "--seeds", "1", "--agents", "random", *sets]) == 0
    return out


def test_holdout_draw_is_a_seeded_split_of_the_catalogue():
    h = HeldOut.draw(50, 0.2, seed=3)
    assert h.n_kept == 40 and h.held.size == 10
    assert sorted(h.order.tolist()) == list(range(50))  # a permutation: kept then held out
    assert np.all(np.diff(h.order[:40]) > 0) and np.all(np.diff(h.held) > 0)
    assert np.array_equal(HeldOut.draw(50, 0.2, seed=3).order, h.order)
    assert not np.array_equal(HeldOut.draw(50, 0.2, seed=4).held, h.held)
    assert h.new_items().sum() == 10 and bool(h.new_items()[40]) and not bool(h.new_items()[39])
    with pytest.raises(ValueError):
        HeldOut.draw(50, 1.0)


def test_catalogue_view_translates_slates_and_hides_held_out_items(tiny_run):
    from hsrl.simulator.env import make_env

    env = make_env(tiny_run, split="test", world="true", batch_users=8, seed=5)
    h = HeldOut.draw(env.n_items, 0.25, seed=1)
    view = CatalogueView(env, h.order, h.n_kept)
    assert view.n_items == h.n_kept and torch.equal(view.item_features, env.item_features[h.order[: h.n_kept]])
    obs = view.reset()
    hidden = set(h.held.tolist())
    world_obs = env.observation
    for row in range(obs.batch_size):  # visible history entries are renumbered, held-out ones are padding
        for w, v in zip(world_obs.hist_items[row].tolist(), obs.hist_items[row].tolist()):
            assert v == (PAD if w == PAD or w in hidden else int(np.flatnonzero(h.order == w)[0]))
    slate = torch.arange(view.slate_size).repeat(obs.batch_size, 1)
    probs = view.response.click_probs(obs, slate)
    assert torch.allclose(probs, env.response.click_probs(world_obs, torch.as_tensor(h.order)[slate]))
    next_obs, _, _, info = view.step(slate)
    shown = env.observation.hist_items  # the world saw world indices of the view's items
    assert set(info["final_obs"].hist_items[:, -view.slate_size :].flatten().tolist()) <= set(range(view.slate_size))
    with pytest.raises(ValueError, match="outside the visible catalogue"):
        view.step(torch.full_like(slate, h.n_kept) + torch.arange(view.slate_size))
    view.reveal()
    assert view.n_items == env.n_items
    local = view.local_items(shown)  # after reveal every item has a view index and nothing is hidden
    assert torch.equal(torch.as_tensor(h.order)[local.clamp_min(0)][shown != PAD], shown[shown != PAD])


def test_restricted_logs_drop_held_out_slots_and_renumber_the_rest():
    order = np.array([2, 0, 3, 1])  # items 2, 0 kept (view 0, 1); 3, 1 held out
    rank = torch.empty(4, dtype=torch.long)
    rank[torch.as_tensor(order)] = torch.arange(4)

    def local(items):
        out = rank[items.clamp_min(0)]
        return torch.where((items == PAD) | (out >= 2), torch.full_like(out, PAD), out)

    obs = Observation(
        torch.tensor([0, 1, 2]),
        torch.zeros(3, 0),
        torch.tensor([[PAD, 1], [2, 0], [3, 2]]),
        torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]),
    )
    logs = LoggedSlates(obs, torch.tensor([[0, 1], [2, 0], [1, 3]]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    r = logs.restricted(local)
    assert len(r) == 2  # the last slate holds held-out items only
    assert r.slate.tolist() == [[1, 0], [0, 1]] and r.weight.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert r.obs.hist_items.tolist() == [[PAD, PAD], [0, 1]] and r.obs.hist_feedback.tolist() == [
        [0.0, 0.0],
        [1.0, 1.0],
    ]


def test_churn_end_to_end_new_items_reach_sid_and_feature_agents_but_never_a2c(cli, tiny_run):
    r = cli(
        "churn",
        tiny_run,
        "--agents",
        "hsrl,a2c,sl,popular,oracle",
        "--seeds",
        "1",
        "--holdout",
        "0.25",
        "--world",
        "all",
    )
    assert r.code == 0, r.err
    root = tiny_run / "churn" / "holdout0.25-seed0"
    held = json.loads((root / "holdout.json").read_text())
    from hsrl.sid.index import SemanticIDIndex

    index = SemanticIDIndex.load(root / "sid" / "index.npz")
    assert index.n_items == held["n_kept"] == 30  # the codebooks never saw the 10 held-out items
    for name in ("hsrl", "a2c", "sl"):
        assert (root / "agents" / name / "seed0" / "agent.pt").is_file()
    results = json.loads((root / "results" / "results.json").read_text())
    assert set(results["aggregate"]) == {"simulator", "judge", "true"}
    assert sorted(results["holdout"]["held_items"]) == held["order"][30:]
    for _world, table in results["aggregate"].items():
        after = {name: phases["after"] for name, phases in table.items()}
        assert after["a2c"]["new_slot_share"]["mean"] == 0.0  # fixed action space: no output for new ids
        assert after["popular"]["new_slot_share"]["mean"] == 0.0  # new items have no logged clicks
        assert after["hsrl"]["new_slot_share"]["mean"] > 0.0  # SIDs from the frozen codebooks
        assert after["sl"]["new_slot_share"]["mean"] > 0.0  # scored from their features
        for phases in table.values():
            assert phases["before"]["episodes"] == phases["after"]["episodes"] == 12
            assert "new_slot_share" not in phases["before"]
    md = (root / "results" / "churn.md").read_text()
    assert "| a2c |" in md and "world: judge" in md
    assert (tiny_run / "simulator_judge" / "model.pt").is_file()


def test_judge_simulator_is_a_second_model_of_the_same_data(cli, tiny_run):
    from hsrl.simulator.response import load_checkpoint

    assert cli("simulator", "train", tiny_run, "--judge").code == 0  # trained here unless churn did already
    r = cli("simulator", "report", tiny_run, "--judge")
    assert r.code == 0 and "AUC" in r.out
    first = load_checkpoint(tiny_run / "simulator" / "model.pt")
    judge = load_checkpoint(tiny_run / "simulator_judge" / "model.pt")
    a, b = first.state_dict(), judge.state_dict()
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)


def test_churn_rejects_a_bad_share(cli, tiny_run):
    r = cli("churn", tiny_run, "--holdout", "1.5", "--agents", "random")
    assert r.code == 2 and "--holdout 1.5" in r.err and "Traceback" not in r.err


def test_oracle_with_new_quality_hidden_knows_the_new_items_by_content_only(tiny_run):
    """The content ceiling of churn: the world with the added items' quality at the kept items' mean."""
    from hsrl.agents.registry import hide_new_quality, true_click_probs
    from hsrl.errors import ConfigError
    from hsrl.rundir import RunDir
    from hsrl.simulator.env import make_env
    from hsrl.workflow import build_agent

    env = make_env(tiny_run, split="test", world="true", batch_users=8, seed=5)
    h = HeldOut.draw(env.n_items, 0.25, seed=1)
    view = CatalogueView(env, h.order, h.n_kept)
    world = RunDir(tiny_run).world()
    hidden = true_click_probs(hide_new_quality(world, view), view)
    obs = view.reset()
    slate = torch.arange(view.slate_size).repeat(obs.batch_size, 1)
    torch.testing.assert_close(hidden(obs, slate), view.click_probs(obs, slate))  # kept items: the world itself
    view.reveal()
    obs = view.observation
    slate = torch.arange(view.n_items - view.slate_size, view.n_items).repeat(obs.batch_size, 1)  # new ones last
    quality = torch.as_tensor(world.item_quality, dtype=torch.float32)
    order = torch.as_tensor(h.order)
    shift = torch.where(slate >= h.n_kept, quality[order[: h.n_kept]].mean() - quality[order[slate]], 0.0)
    assert (shift != 0).any()
    torch.testing.assert_close(
        torch.logit(hidden(obs, slate)), torch.logit(view.click_probs(obs, slate)) + shift, atol=1e-3, rtol=0
    )
    cfg = RunDir(tiny_run).config()
    with pytest.raises(ConfigError, match="hsrl churn"):  # without a churn view there is nothing to hide
        build_agent("oracle:new_quality=hidden", tiny_run, cfg, env, 0)
