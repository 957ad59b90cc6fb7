"""MovieLens-100K / -1M -> LogDataset, from the GroupLens files or RecBole atomic files (DESIGN §4).

Protocol of the HAC/KuaiSim MovieLens setups: each user's ratings sorted by time (ties keep file
order), a slate = K consecutive ratings (the incomplete tail is dropped), feedback = rating >=
``click_threshold``, history = the user's earlier items WITH their feedback. Item features: genre
multi-hot + release year scaled to [0, 1] (a missing year gets the mean and a ``year_missing`` flag).
Profiles (when a user file is there): age scaled to [0, 1], gender (1 = M), occupation one-hot.

Formats found in a ``--source`` folder (or the folder of a file given as ``--source``):
``u.data``/``u.item``/``u.user`` (GroupLens 100K), ``ratings.dat``/``movies.dat``/``users.dat``
(GroupLens 1M, ``::``, latin-1), ``<name>.inter``/``.item``/``.user`` (RecBole, tab, typed header).
Without ``--source``, ML-100K is fetched once into the cache (see ``fetch``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsrl.config import DataConfig
from hsrl.data.csvlogs import assemble, consecutive_slates, index_users, item_lookup, unique_ids
from hsrl.data.fetch import ML1M_HINT, ml100k_folder
from hsrl.data.schema import LogDataset
from hsrl.data.tables import Table, read_delimited
from hsrl.errors import ConfigError, InputError

# The 19 genre flags of u.item, in file order (GroupLens u.genre).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")


@dataclass
class Ratings:
    table: Table  # for error positions
    user: np.ndarray  # (R,) str
    item: np.ndarray  # (R,) str
    rating: np.ndarray  # (R,) float
    time: np.ndarray  # (R,) int64
    user_field: str = "user"
    item_field: str = "item"


@dataclass
class Movies:
    ids: np.ndarray  # (N,) str
    titles: list[str]
    years: np.ndarray  # (N,) float, NaN = unknown
    genres: list[list[str]]


@dataclass
class Users:
    table: Table
    ids: np.ndarray  # (U,) str
    age: np.ndarray  # (U,) float
    gender: np.ndarray  # (U,) str
    occupation: np.ndarray  # (U,) str


# ---------------------------------------------------------------- format detection
def find_files(source: Path, dataset: str) -> tuple[str, Path]:
    """(format, folder) for a source folder or a file inside one; a sub-folder named like the dataset
    (the unzipped archive) is looked into as well."""
    if source.is_file():
        source = source.parent
    elif not source.exists():
        raise InputError(str(source), "path not found", expected="a MovieLens folder or a file in one")
    candidates = [source, source / dataset, *sorted(p for p in source.glob("ml-*") if p.is_dir())]
    for folder in candidates:
        if (folder / "u.data").is_file():
            return "grouplens-100k", folder
        if (folder / "ratings.dat").is_file():
            return "grouplens-1m", folder
        if list(folder.glob("*.inter")):
            return "recbole", folder
    raise InputError(
        str(source), "no MovieLens files found",
        expected="u.data + u.item (GroupLens 100K), ratings.dat + movies.dat (GroupLens 1M) "
        "or NAME.inter + NAME.item (RecBole)",
    )  # fmt: skip


def _need(folder: Path, name: str, partner: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise InputError(str(path), f"file not found (needed next to {partner})", expected="an existing file")
    return path


# ---------------------------------------------------------------- GroupLens 100K
def _read_100k(folder: Path) -> tuple[Ratings, Movies, Users | None]:
    t = read_delimited(folder / "u.data", "\t", names=["user", "item", "rating", "time"], encoding="latin-1")
    ratings = Ratings(t, t.text("user"), t.text("item"), t.numbers("rating"), t.numbers("time", integer=True))
    m = read_delimited(
        _need(folder, "u.item", "u.data"), "|", encoding="latin-1",
        names=["item", "title", "release_date", "video_date", "url", *GENRES_100K],
    )  # fmt: skip
    onehot = np.stack([m.numbers(g, integer=True) for g in GENRES_100K], axis=1)
    bad = np.argwhere((onehot != 0) & (onehot != 1))
    if len(bad):
        m.fail(bad[0][0], GENRES_100K[bad[0][1]], f"genre flag {onehot[tuple(bad[0])]}", "0 or 1")
    dates = m.text("release_date", allow_empty=True)
    movies = Movies(
        ids=unique_ids(m, "item"),
        titles=m.text("title", allow_empty=True).tolist(),
        years=np.array([_year(d[-4:]) for d in dates]),
        genres=[[GENRES_100K[j] for j in np.flatnonzero(row)] for row in onehot],
    )
    users = None
    if (folder / "u.user").is_file():
        u = read_delimited(
            folder / "u.user", "|", names=["user", "age", "gender", "occupation", "zip"], encoding="latin-1"
        )
        users = Users(u, unique_ids(u, "user"), u.numbers("age"), u.text("gender"), u.text("occupation"))
    return ratings, movies, users


# ---------------------------------------------------------------- GroupLens 1M
def _read_1m(folder: Path) -> tuple[Ratings, Movies, Users | None]:
    t = read_delimited(folder / "ratings.dat", "::", names=["user", "item", "rating", "time"], encoding="latin-1")
    ratings = Ratings(t, t.text("user"), t.text("item"), t.numbers("rating"), t.numbers("time", integer=True))
    m = read_delimited(
        _need(folder, "movies.dat", "ratings.dat"), "::", names=["item", "title", "genres"], encoding="latin-1"
    )
    titles = m.text("title").tolist()
    movies = Movies(
        ids=unique_ids(m, "item"),
        titles=titles,
        years=np.array([_year(match.group(1)) if (match := _YEAR_IN_TITLE.search(t_)) else np.nan for t_ in titles]),
        genres=[[g for g in cell.split("|") if g] for cell in m.text("genres", allow_empty=True)],
    )
    users = None
    if (folder / "users.dat").is_file():
        u = read_delimited(
            folder / "users.dat", "::", names=["user", "gender", "age", "occupation", "zip"], encoding="latin-1"
        )
        users = Users(u, unique_ids(u, "user"), u.numbers("age"), u.text("gender"), u.text("occupation"))
    return ratings, movies, users


# ---------------------------------------------------------------- RecBole atomic files
def _recbole_table(path: Path, required: list[str]) -> Table:
    """RecBole headers are typed (``user_id:token``); the type suffix is dropped from the names."""
    table = read_delimited(path, "\t", required=[])
    table.frame.columns = [c.split(":", 1)[0] for c in table.frame.columns]
    table.require(required, sep="\t")
    return table


def _read_recbole(folder: Path, dataset: str) -> tuple[Ratings, Movies, Users | None]:
    inters = sorted(folder.glob("*.inter"))
    inter = folder / f"{dataset}.inter" if (folder / f"{dataset}.inter").is_file() else inters[0]
    stem = inter.with_suffix("")
    t = _recbole_table(inter, ["user_id", "item_id", "rating", "timestamp"])
    ratings = Ratings(
        t, t.text("user_id"), t.text("item_id"), t.numbers("rating"), t.numbers("timestamp").astype(np.int64),
        user_field="user_id", item_field="item_id",
    )  # fmt: skip
    m = _recbole_table(_need(folder, stem.name + ".item", inter.name), ["item_id", "movie_title"])
    genre_col = next((c for c in ("class", "genre", "genres") if c in m.frame.columns), None)
    if genre_col is None:
        m.require(["item_id", "movie_title", "class"], sep="\t")
        raise AssertionError("unreachable: require() raised for the missing genre column")
    years = m.text("release_year", allow_empty=True) if "release_year" in m.frame.columns else None
    titles = m.text("movie_title", allow_empty=True).tolist()
    movies = Movies(
        ids=unique_ids(m, "item_id"),
        titles=titles,
        years=np.array([_year(y) for y in years]) if years is not None else np.array(
            [_year(match.group(1)) if (match := _YEAR_IN_TITLE.search(t_)) else np.nan for t_ in titles]),
        genres=[cell.split() for cell in m.text(genre_col, allow_empty=True)],
    )  # fmt: skip
    users = None
    user_path = folder / (stem.name + ".user")
    if user_path.is_file():
        u = _recbole_table(user_path, ["user_id", "age", "gender", "occupation"])
        users = Users(u, unique_ids(u, "user_id"), u.numbers("age"), u.text("gender"), u.text("occupation"))
    return ratings, movies, users


def _year(text: str) -> float:
    """A 4-digit year, or NaN when unknown (ML-100K has 'unknown' entries and empty dates)."""
    text = text.strip()
    return float(text) if len(text) == 4 and text.isdigit() else np.nan


# ---------------------------------------------------------------- features
def item_features(movies: Movies) -> tuple[np.ndarray, list[str], list[str]]:
    """Genre multi-hot + scaled year + year-missing flag; and the texts 'Title (year) G1|G2'."""
    vocab = [g for g in GENRES_100K if any(g in gs for gs in movies.genres)]
    vocab += sorted({g for gs in movies.genres for g in gs} - set(vocab))
    col = {g: j for j, g in enumerate(vocab)}
    multi_hot = np.zeros((len(movies.ids), len(vocab)), dtype=np.float32)
    for i, gs in enumerate(movies.genres):
        multi_hot[i, [col[g] for g in gs]] = 1.0
    years = movies.years
    known = np.isfinite(years)
    scaled = np.zeros(len(years))
    if known.any():
        lo, hi = years[known].min(), years[known].max()
        scaled[known] = (years[known] - lo) / max(hi - lo, 1.0)
        scaled[~known] = scaled[known].mean()
    features = np.column_stack([multi_hot, scaled, (~known).astype(np.float32)]).astype(np.float32)
    texts = []
    for title, year, gs in zip(movies.titles, years, movies.genres):
        name = _YEAR_IN_TITLE.sub("", title).strip()
        texts.append(" ".join(p for p in (name, f"({int(year)})" if np.isfinite(year) else "", "|".join(gs)) if p))
    return features, [f"genre:{g}" for g in vocab] + ["year", "year_missing"], texts


def user_profiles(users: Users, user_ids: np.ndarray, ratings: Ratings) -> tuple[np.ndarray, list[str]]:
    """Profiles of ``user_ids`` in order: age scaled to [0, 1], gender (1 = M), occupation one-hot."""
    pos = {uid: i for i, uid in enumerate(users.ids)}
    where = np.array([pos.get(uid, -1) for uid in user_ids])
    if (where < 0).any():
        missing = user_ids[int(np.flatnonzero(where < 0)[0])]
        first_row = int(np.flatnonzero(ratings.user == missing)[0])
        ratings.table.fail(
            first_row,
            ratings.user_field,
            f"user '{missing}' is not in {users.table.path.name}",
            "every rating's user listed in the user file",
        )
    gender = np.char.upper(users.gender.astype(str))
    bad = np.flatnonzero((gender != "M") & (gender != "F"))
    if bad.size:
        users.table.fail(bad[0], "gender", f"'{users.gender[bad[0]]}'", "M or F")
    age = users.age
    age = (age - age.min()) / max(age.max() - age.min(), 1.0)
    jobs = sorted(set(users.occupation.tolist()))
    onehot = (users.occupation[:, None] == np.array(jobs)[None, :]).astype(np.float32)
    profiles = np.column_stack([age, gender == "M", onehot]).astype(np.float32)[where]
    return profiles, ["age", "gender_m", *[f"occupation:{j}" for j in jobs]]


# ---------------------------------------------------------------- reader
def read(config: DataConfig) -> LogDataset:
    if config.unknown_items != "error":  # GroupLens files are consistent; a RecBole export that is not is an error
        raise ConfigError(
            f"data.unknown_items={config.unknown_items} applies to csv and rl4rs logs, not {config.dataset}"
        )
    if config.source:
        source = Path(config.source).expanduser()
    elif config.dataset == "ml-100k":
        source = ml100k_folder()
    else:
        raise ConfigError(ML1M_HINT)
    fmt, folder = find_files(source, config.dataset)
    if fmt == "grouplens-100k":
        ratings, movies, users = _read_100k(folder)
    elif fmt == "grouplens-1m":
        ratings, movies, users = _read_1m(folder)
    else:
        ratings, movies, users = _read_recbole(folder, config.dataset)
    features, feature_names, texts = item_features(movies)
    items = item_lookup(movies.ids, ratings.table, ratings.item_field, ratings.item)
    user_ids, user = index_users(ratings.user)
    feedback = (ratings.rating >= config.click_threshold).astype(np.float32)
    k = config.slate_size
    imp_user, imp_time, imp_items, imp_fb = consecutive_slates(user, ratings.time, items, feedback, k)
    profiles: np.ndarray | None = None
    profile_names: list[str] = []
    if users is not None:
        profiles, profile_names = user_profiles(users, user_ids, ratings)
    meta = {
        "name": config.dataset,
        "source": str(folder),
        "format": fmt,
        "ratings": int(len(ratings.user)),
        "ratings_in_slates": int(imp_items.size),
        "click_threshold": config.click_threshold,
        "feature_names": feature_names,
        "profile_names": profile_names,
    }
    return assemble(
        config, item_ids=movies.ids, item_features=features, item_text=texts, user_ids=user_ids,
        imp_user=imp_user, imp_time=imp_time, imp_items=imp_items, imp_feedback=imp_fb,
        user_profiles=profiles, meta=meta,
    )  # fmt: skip
