"""Bad input (DESIGN §4): every kind is reported as file + line + field + what was expected, exit code 2,
no traceback, and RUN_DIR/data is never written."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from fixtures.rl4rs_sessions import write_sessions


def assert_rejected(r, out: Path, *needles: str) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    assert "Traceback" not in r.err and "Traceback" not in r.out
    for needle in needles:
        assert needle in r.err, f"{needle!r} not in {r.err!r}"
    assert not (out / "data").exists()


def edit_line(path: Path, line: int, fn) -> None:
    """Replace 1-based ``line`` of a text file by ``fn(old_line)``."""
    lines = path.read_text().split("\n")
    lines[line - 1] = fn(lines[line - 1])
    path.write_text("\n".join(lines))


def set_field(line: str, sep: str, index: int, value: str) -> str:
    fields = line.split(sep)
    fields[index] = value
    return sep.join(fields)


@pytest.fixture
def rl4rs(tmp_path, rl4rs_items):
    """(session file, private copy of the real item file, out dir) for the RL4RS cases."""
    sessions = tmp_path / "sessions.csv"
    write_sessions(rl4rs_items, sessions, n_sessions=4, seed=2)
    items = tmp_path / "item_info.csv"
    items.write_text(rl4rs_items.read_text())
    return sessions, items, tmp_path / "run"


def prepare_rl4rs(cli, rl4rs):
    sessions, items, out = rl4rs
    return cli("data", "prepare", "--dataset", "rl4rs", "--source", sessions, "--items", items, "--out", out)


@pytest.fixture
def csvlogs(tmp_path):
    """(interactions.csv, items.csv, out dir): 3 users x 6 interactions, K = 3 via --set."""
    inter = tmp_path / "interactions.csv"
    rows = [f"u{u},i{(u + j) % 4},{j},{j % 2}" for u in range(3) for j in range(6)]
    inter.write_text("user,item,time,feedback\n" + "\n".join(rows) + "\n")
    items = tmp_path / "items.csv"
    items.write_text("item,f1,f2,text\n" + "".join(f"i{i},{i * 0.5},{i},item {i}\n" for i in range(4)))
    return inter, items, tmp_path / "run"


def prepare_csv(cli, csvlogs, source: Path | None = None, items: Path | None = None):
    inter, item_file, out = csvlogs
    return cli("data", "prepare", "--dataset", "csv", "--source", source or inter, "--items", items or item_file,
               "--out", out, "--set", "data.slate_size=3")  # fmt: skip


def test_good_fixtures_are_accepted(cli, rl4rs, csvlogs):
    """The cases below fail only because of the one defect each introduces."""
    sessions, items, out = rl4rs
    assert prepare_rl4rs(cli, (sessions, items, out.with_name("run_rl4rs"))).code == 0  # one dataset per run
    assert prepare_csv(cli, csvlogs).code == 0


# ---------------------------------------------------------------- the kinds of bad input
def test_missing_column(cli, csvlogs):
    inter, _, out = csvlogs
    frame = pd.read_csv(inter).drop(columns="feedback")
    frame.to_csv(inter, index=False)
    assert_rejected(prepare_csv(cli, csvlogs), out, "interactions.csv", "row 1", "field 'feedback'", "missing column")


def test_wrong_list_length(cli, rl4rs):
    sessions, _, out = rl4rs
    edit_line(sessions, 3, lambda s: set_field(s, "@", 3, ",".join(s.split("@")[3].split(",")[:8])))
    assert_rejected(prepare_rl4rs(cli, rl4rs), out, "sessions.csv", "row 3", "field 'exposed_items'", "8", "9 entries")


def test_nan_feature(cli, csvlogs):
    _, items, out = csvlogs
    edit_line(items, 3, lambda s: set_field(s, ",", 2, "NaN"))
    assert_rejected(prepare_csv(cli, csvlogs), out, "items.csv", "row 3", "field 'f2'", "NaN", "a finite number")


def test_non_numeric_feature(cli, rl4rs):
    _, items, out = rl4rs
    edit_line(items, 5, lambda s: set_field(s, " ", 1, set_field(s.split(" ")[1], ",", 1, "abc")))
    assert_rejected(prepare_rl4rs(cli, rl4rs), out, "item_info.csv", "row 5", "field 'item_vec'", "non-numeric", "abc")


def test_unknown_item_id(cli, csvlogs):
    inter, _, out = csvlogs
    edit_line(inter, 4, lambda s: set_field(s, ",", 1, "zzz"))
    assert_rejected(
        prepare_csv(cli, csvlogs),
        out,
        "interactions.csv",
        "row 4",
        "field 'item'",
        "unknown item id 'zzz'",
        "(expected an id listed in the item file; set data.unknown_items=drop to drop such rows)",
    )


def test_unknown_item_id_in_rl4rs_slate(cli, rl4rs):
    sessions, _, out = rl4rs
    edit_line(sessions, 2, lambda s: set_field(s, "@", 3, "999," + ",".join(s.split("@")[3].split(",")[1:])))
    assert_rejected(
        prepare_rl4rs(cli, rl4rs),
        out,
        "sessions.csv",
        "row 2",
        "field 'exposed_items'",
        "unknown item id 999 (entry 1)",
        "data.unknown_items=drop",
    )


def test_empty_file(cli, rl4rs):
    sessions, _, out = rl4rs
    sessions.write_text("")
    assert_rejected(prepare_rl4rs(cli, rl4rs), out, "sessions.csv", "empty")


def test_duplicate_item_id(cli, rl4rs):
    _, items, out = rl4rs
    edit_line(items, 4, lambda s: set_field(s, " ", 0, "2"))
    assert_rejected(
        prepare_rl4rs(cli, rl4rs), out, "item_info.csv", "row 4", "field 'item_id'", "duplicate id '2' (first at row 3)"
    )


def test_wrong_separator_in_headerless_file(cli, tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "u.data").write_text("1\t1\t5\t100\n1,2,4,101\n")
    (folder / "u.item").write_text("1|A (1995)|01-Jan-1995||u|" + "|".join("0" * 19) + "\n")
    out = tmp_path / "run"
    r = cli("data", "prepare", "--dataset", "ml-100k", "--source", folder, "--out", out)
    assert_rejected(r, out, "u.data", "row 2", "separated by ','", "4 fields separated by a tab")


def test_wrong_separator_in_header(cli, rl4rs):
    sessions, _, out = rl4rs
    sessions.write_text(sessions.read_text().replace("@", ","))
    assert_rejected(prepare_rl4rs(cli, rl4rs), out, "sessions.csv", "row 1", "field 'timestamp'", "expected '@'")


def test_non_numeric_rating(cli, tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "movies.dat").write_text("1::A (1995)::Drama\n")
    (folder / "ratings.dat").write_text("1::1::5::100\n1::1::five::101\n")
    out = tmp_path / "run"
    r = cli("data", "prepare", "--dataset", "ml-1m", "--source", folder, "--out", out)
    assert_rejected(r, out, "ratings.dat", "row 2", "field 'rating'", "non-numeric value 'five'")


def test_missing_path(cli, csvlogs, tmp_path):
    _, _, out = csvlogs
    missing = tmp_path / "nowhere" / "logs.csv"
    assert_rejected(prepare_csv(cli, csvlogs, source=missing), out, "logs.csv", "file not found")


def test_rl4rs_feedback_not_binary(cli, rl4rs):
    sessions, _, out = rl4rs
    edit_line(sessions, 4, lambda s: set_field(s, "@", 4, "0,0,2,0,0,0,0,0,1"))
    assert_rejected(
        prepare_rl4rs(cli, rl4rs), out, "sessions.csv", "row 4", "field 'user_feedback'", "value 2", "0 or 1"
    )


def test_csv_slate_with_wrong_number_of_rows(cli, csvlogs):
    inter, _, out = csvlogs
    frame = pd.read_csv(inter)
    frame["slate"] = [f"s{j // 3}" for j in range(len(frame))]
    frame.loc[7, "slate"] = "s0"  # u1's slate s2 (file lines 8-10) loses line 9 to a one-row slate s0
    frame.to_csv(inter, index=False)
    assert_rejected(
        prepare_csv(cli, csvlogs),
        out,
        "interactions.csv",
        "row 8",
        "field 'slate'",
        "slate 's2' of user 'u1' has 2 rows",
        "exactly 3 rows",
    )


def test_header_only_file(cli, csvlogs):
    _, items, out = csvlogs
    items.write_text("item,f1,f2,text\n")
    assert_rejected(prepare_csv(cli, csvlogs), out, "items.csv", "only a header line")


def test_item_vec_dimension_differs_between_rows(cli, rl4rs):
    _, items, out = rl4rs
    edit_line(items, 6, lambda s: set_field(s, " ", 1, ",".join(s.split(" ")[1].split(",")[:39])))
    assert_rejected(
        prepare_rl4rs(cli, rl4rs), out, "item_info.csv", "row 6", "field 'item_vec'", "39", "row 2 has 40", "40 entries"
    )


def test_repeated_session_step(cli, rl4rs):
    sessions, _, out = rl4rs
    lines = sessions.read_text().strip().split("\n")
    sessions.write_text("\n".join([*lines, lines[1]]) + "\n")
    assert_rejected(prepare_rl4rs(cli, rl4rs), out, "sessions.csv", f"row {len(lines) + 1}", "field 'sequence_id'")


def test_parquet_nan_feedback_names_the_record(cli, csvlogs):
    inter, _, out = csvlogs
    frame = pd.read_csv(inter).astype({"feedback": float})
    frame.loc[4, "feedback"] = float("nan")
    frame.to_parquet(inter.with_suffix(".parquet"))
    r = prepare_csv(cli, csvlogs, source=inter.with_suffix(".parquet"))
    assert_rejected(r, out, "interactions.parquet", "row 5", "field 'feedback'", "NaN")


def test_recbole_missing_typed_column(cli, tmp_path):
    folder = tmp_path / "rb"
    folder.mkdir()
    (folder / "ml-100k.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t1\t100\n")
    (folder / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n1\tA\tDrama\n")
    out = tmp_path / "run"
    r = cli("data", "prepare", "--dataset", "ml-100k", "--source", folder, "--out", out)
    assert_rejected(r, out, "ml-100k.inter", "row 1", "field 'rating'", "missing column")


def test_feedback_out_of_range_in_csv(cli, csvlogs):
    inter, _, out = csvlogs
    edit_line(inter, 6, lambda s: set_field(s, ",", 3, "3"))
    assert_rejected(prepare_csv(cli, csvlogs), out, "interactions.csv", "row 6", "field 'feedback'", "[0, 1]")


def test_extra_field_in_rl4rs_line(cli, rl4rs):
    sessions, _, out = rl4rs
    edit_line(sessions, 3, lambda s: s + "@extra")
    assert_rejected(prepare_rl4rs(cli, rl4rs), out, "sessions.csv", "row 3", "10 fields", "9 fields separated by '@'")


def test_line_numbers_count_blank_lines(cli, csvlogs):
    inter, _, out = csvlogs
    lines = inter.read_text().split("\n")
    lines[5] = "u1,i1,5,x"  # file line 6 ...
    inter.write_text("\n".join([*lines[:2], "", *lines[2:]]))  # ... becomes line 7 after a blank line 3
    assert_rejected(prepare_csv(cli, csvlogs), out, "interactions.csv", "row 7", "field 'feedback'", "'x'")


# ---------------------------------------------------------------- quoted CSV: records that span lines
def write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def noted_interactions(inter: Path) -> list[list[str]]:
    """The fixture's interactions with a quoted 'note' column; data row 2 spans file lines 3-5, so data
    row j >= 3 starts on file line j + 3."""
    rows = [line.split(",") + ["ok"] for line in inter.read_text().strip().split("\n")]
    rows[0][-1] = "note"
    rows[2][-1] = 'three\nlines, "quoted"\nhere'
    return rows


def test_line_numbers_after_a_multiline_quoted_record(cli, csvlogs):
    inter, items, out = csvlogs
    rows = noted_interactions(inter)
    rows[4][1] = "zzz"  # data row 4 -> file line 7
    write_csv(inter, rows)
    assert inter.read_text().count("\n") == len(rows) + 2
    assert_rejected(
        prepare_csv(cli, csvlogs), out, "interactions.csv", "row 7", "field 'item'", "unknown item id 'zzz'"
    )
    item_rows = [["item", "f1", "f2", "text"], ["i0", "0", "0", "a,\nb"], ["i1", "1", "1", 'say ""hi""'],
                 ["i2", "2", "NaN", "c"], ["i3", "3", "3", "d"]]  # fmt: skip
    write_csv(items, item_rows)
    assert_rejected(prepare_csv(cli, csvlogs), out, "items.csv", "row 5", "field 'f2'", "NaN")


def test_too_many_fields_after_a_multiline_quoted_record(cli, csvlogs):
    inter, _, out = csvlogs
    rows = noted_interactions(inter)
    rows[6].append("extra")  # data row 6 -> file line 9
    write_csv(inter, rows)
    assert_rejected(prepare_csv(cli, csvlogs), out, "interactions.csv", "row 9", "6 fields",
                    "expected 5 fields separated by ','", "double quotes")  # fmt: skip


def test_unterminated_quote(cli, csvlogs):
    _, items, out = csvlogs
    edit_line(items, 3, lambda s: set_field(s, ",", 3, '"item 1'))  # the quote runs to the end of the file
    assert_rejected(prepare_csv(cli, csvlogs), out, "items.csv", "row 3", "unterminated quoted field", "closing '\"'")


# ---------------------------------------------------------------- data.unknown_items=drop
def test_drop_policy_reports_what_it_dropped(cli, csvlogs):
    inter, items, out = csvlogs
    edit_line(inter, 4, lambda s: set_field(s, ",", 1, "zzz"))
    edit_line(inter, 9, lambda s: set_field(s, ",", 1, "yyy"))
    r = cli("data", "prepare", "--dataset", "csv", "--source", inter, "--items", items, "--out", out,
            "--set", "data.slate_size=3", "--set", "data.unknown_items=drop")  # fmt: skip
    assert r.code == 0, r.err
    for text in (r.out, cli("data", "describe", out).out):
        assert "unknown_item_rows_dropped" in text and "zzz, yyy" in text
    from hsrl.data.schema import LogDataset

    ds = LogDataset.load(out / "data")
    assert ds.meta["unknown_items"]["rows_dropped"] == 2
    assert ds.n_impressions == 4  # u0 and u1 keep 5 rows (one slate of 3 each), u2 all 6 (two)


def test_drop_policy_that_drops_everything_is_an_error(cli, csvlogs):
    inter, items, out = csvlogs
    items.write_text(items.read_text().replace("\ni", "\nx"))  # the catalogue's ids are x0..x3 now
    r = cli("data", "prepare", "--dataset", "csv", "--source", inter, "--items", items, "--out", out,
            "--set", "data.slate_size=3", "--set", "data.unknown_items=drop")  # fmt: skip
    assert_rejected(r, out, "interactions.csv", "field 'item'", "every row names an item missing from the item file",
                    "'i0', 'i1', 'i2', 'i3'")  # fmt: skip


def test_rl4rs_drop_policy_that_drops_every_step_is_an_error(cli, rl4rs):
    sessions, items, out = rl4rs
    lines = sessions.read_text().strip().split("\n")
    for line in range(2, len(lines) + 1):
        edit_line(sessions, line, lambda s: set_field(s, "@", 3, "999999," + ",".join(s.split("@")[3].split(",")[1:])))
    r = cli("data", "prepare", "--dataset", "rl4rs", "--source", sessions, "--items", items, "--out", out,
            "--set", "data.unknown_items=drop")  # fmt: skip
    assert_rejected(r, out, "sessions.csv", "field 'exposed_items'", "every step names an item missing", "'999999'")
