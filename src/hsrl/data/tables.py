"""Read raw delimited/Parquet files as text tables and turn cells into arrays, with errors that name
the file, the line, the field and what was expected (DESIGN §4 "Bad input").

Every reader goes through here so that bad input is caught the same way everywhere, before anything
is written. Cells are kept as strings until a column is converted, so a bad value is reported at its
own line instead of surfacing as a pandas exception.

Comma- and tab-separated files are read as RFC 4180 CSV (what Python's csv module, pandas and
spreadsheets write): a field in double quotes may hold separators, newlines and doubled quotes ``""``.
Other separators ('@', ' ', '|', '::') are never quoted in their formats, so a quote there is data.
A UTF-8 byte order mark at the start of a file is skipped whatever the encoding.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hsrl.errors import InputError

_SEPARATORS = {"@": "'@'", "\t": "a tab", ",": "','", " ": "a space", "|": "'|'", ";": "';'", "::": "'::'"}
_NOT_FINITE = {"nan", "inf", "infinity", "na", "null", "none"}
_QUOTED = (",", "\t")  # separators read as RFC 4180 CSV (quoted fields)
_BOM = b"\xef\xbb\xbf"


@dataclass
class Table:
    """A raw file's cells as strings. Positional row i is data record ``frame.index[i]``, on file line
    ``frame.index[i] + first_line`` (the index keeps file positions, so dropped blank lines and dropped
    rows do not shift line numbers). In a quoted file a record may span lines; its first line is then
    found by re-reading the file, only when a location is asked for (an error), so reading pays nothing."""

    path: Path
    frame: pd.DataFrame
    first_line: int  # 2 for a file with a header line, 1 without one (and for Parquet records)
    quoted: tuple[str, str] | None = None  # (separator, encoding) of an RFC 4180 file, else None
    _starts: dict = field(default_factory=dict, repr=False, compare=False)  # record_lines() once, shared by subsets

    def __len__(self) -> int:
        return len(self.frame)

    def line(self, position: int) -> int:
        """File line (or record) number of positional row ``position``: a record's first line."""
        record = int(self.frame.index[position]) + self.first_line - 1  # counting the header record
        if self.quoted is not None:
            if "lines" not in self._starts:
                self._starts["lines"] = record_lines(self.path, *self.quoted)
            starts = self._starts["lines"]
            if starts is not None and record < len(starts):
                return int(starts[record])
        return record + 1

    def subset(self, keep: np.ndarray) -> Table:
        """The rows where boolean ``keep`` is true, with their line numbers (e.g. rows dropped by policy)."""
        return Table(self.path, self.frame.loc[self.frame.index[keep]], self.first_line, self.quoted, self._starts)

    def fail(self, position: int | None, field: str | None, message: str, expected: str | None = None) -> None:
        row = None if position is None else self.line(position)
        raise InputError(str(self.path), message, row=row, field=field, expected=expected)

    def text(self, column: str, allow_empty: bool = False) -> np.ndarray:
        """A column as stripped strings; an empty cell is an error unless ``allow_empty``."""
        values = self.frame[column].astype(str).str.strip().to_numpy(dtype=object)
        if not allow_empty:
            empty = np.flatnonzero(values == "")
            if empty.size:
                self.fail(empty[0], column, "empty value", "a value")
        return values

    def numbers(self, column: str, integer: bool = False) -> np.ndarray:
        """A column as finite float64 (or int64) values; the first bad cell is reported."""
        return to_numbers(self.text(column, allow_empty=True), self, column, integer=integer)

    def lists(self, column: str, width: int | None = None, integer: bool = False) -> np.ndarray:
        """A comma-separated list column as a (rows, width) array; every row must have the same length.

        ``width=None`` takes the first row's length as the expected one (e.g. the 40-d RL4RS item_vec).
        """
        cells = self.text(column)
        counts = np.fromiter((c.count(",") + 1 for c in cells), dtype=np.int64, count=len(cells))
        expected = int(counts[0]) if width is None else width
        bad = np.flatnonzero(counts != expected)
        if bad.size:
            i = bad[0]
            where = "" if width is not None else f" (row {self.line(0)} has {expected})"
            self.fail(i, column, f"{counts[i]} comma-separated entries{where}", f"{expected} entries")
        flat = np.array(",".join(cells).split(","), dtype=object)
        values = to_numbers(flat, self, column, integer=integer, stride=expected)
        return values.reshape(len(cells), expected)

    def require(self, columns: list[str] | tuple[str, ...], sep: str | None = None) -> None:
        """Every column must be present; a missing one is reported with the columns found (and a hint
        when the header looks split by another separator)."""
        present = [str(c).strip() for c in self.frame.columns]
        missing = [c for c in columns if c not in present]
        if not missing:
            return
        hint = ""
        header = str(self.frame.columns[0]) if len(present) == 1 else ""
        for other, name in _SEPARATORS.items():
            if sep is not None and other != sep and header and set(columns) <= set(header.split(other)):
                hint = f"; the header is separated by {name}, expected {_SEPARATORS.get(sep, repr(sep))}"
                break
        found = f" (found: {', '.join(present)})" if not hint else ""
        raise InputError(
            str(self.path),
            f"missing column '{missing[0]}'{found}{hint}",
            row=1 if self.first_line == 2 else None,
            field=missing[0],
            expected="columns " + ", ".join(columns),
        )


def to_numbers(
    cells: np.ndarray,
    table: Table,
    column: str,
    integer: bool = False,
    stride: int = 1,
) -> np.ndarray:
    """Strings -> finite numbers; ``stride`` maps a flat index back to its row (list columns)."""
    series = pd.Series(cells, dtype=object)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raw = str(cells[bad[0]]).strip()
        if raw == "":
            message = "empty value"
        elif np.isinf(values[bad[0]]) or raw.lower().lstrip("+-") in _NOT_FINITE:
            message = f"'{raw}' is NaN or infinite"
        else:
            message = f"non-numeric value '{raw[:40]}'"
        table.fail(bad[0] // stride, column, message, "an integer" if integer else "a finite number")
    if integer:
        frac = np.flatnonzero(values != np.round(values))
        if frac.size:
            table.fail(frac[0] // stride, column, f"'{cells[frac[0]]}' is not an integer", "an integer")
        return values.astype(np.int64)
    return values


def check_file(path: str | Path) -> Path:
    """The path must be an existing, readable, non-empty regular file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(str(p), "file not found", expected="an existing file")
    if not p.is_file():
        raise InputError(str(p), "not a regular file", expected="a file, not a folder")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise InputError(str(p), f"cannot be read ({exc.strerror})", expected="a readable file") from None
    if not head.strip():
        raise InputError(str(p), "the file is empty", expected="a header line and data rows")
    return p


def read_delimited(
    path: str | Path,
    sep: str,
    *,
    names: list[str] | None = None,
    required: list[str] | tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    encoding: str = "utf-8",
) -> Table:
    """Read a text table as strings. With ``names`` the file has no header (line 1 is data); without,
    line 1 is the header and ``required`` columns must be in it. Columns in ``skip`` are checked in the
    header but not loaded (RL4RS ``item_feature`` is most of a multi-GB file). Blank lines are dropped
    after reading (their line numbers stay accounted for). ',' and a tab are read as RFC 4180 CSV
    (quoted fields); rows are then records, located at their first line."""
    p = check_file(path)
    usecols = None
    quoted = (sep, encoding) if sep in _QUOTED else None
    if names is None:
        head = _parse(p, sep, encoding, header=0, nrows=0)
        head.columns = [str(c).strip() for c in head.columns]
        Table(p, head, first_line=2).require(list(required), sep=sep)
        if skip and quoted is None:  # (a quoted file is read whole: its separators cannot be counted raw)
            usecols = [c for c in head.columns if c not in skip]
            _check_separator_counts(p, sep, len(head.columns))  # pandas ignores extra fields with usecols
    frame = _parse(p, sep, encoding, header=None if names is not None else 0, names=names, usecols=usecols)
    frame.columns = [str(c).strip() for c in frame.columns]
    if skip and quoted is not None:
        frame = frame.drop(columns=[c for c in skip if c in frame.columns])
    keep = ~_blank_rows(frame)
    table = Table(p, frame.loc[keep], first_line=1 if names is not None else 2, quoted=quoted)
    if len(table.frame) == 0:
        what = "only a header line" if names is None else "no data lines"
        raise InputError(str(p), f"{what}, no data rows", expected="at least one data row")
    table.frame.index = np.flatnonzero(keep)  # file positions, for line numbers
    if names is not None and len(names) > 1:
        _check_field_counts(table, sep)
    return table


def _parse(path: Path, sep: str, encoding: str, **kwargs) -> pd.DataFrame:
    """pandas' C parser on all-string cells, its errors turned into InputErrors with the line."""
    quoted = sep in _QUOTED
    engine_sep, bom = sep, _has_bom(path)
    try:
        with open(path, "rb") as fh:
            fh.seek(len(_BOM) if bom else 0)  # pandas skips a BOM only in UTF-8 files
            source: io.BufferedReader | io.StringIO = fh
            if len(sep) > 1:  # '::' (MovieLens-1M): map to one character so the fast C parser can be used
                source, engine_sep = io.StringIO(fh.read().decode(encoding).replace(sep, "\x1f")), "\x1f"
            return pd.read_csv(
                source,
                sep=engine_sep,
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,  # unquoted formats: a quote is data
                quotechar='"',
                doublequote=True,
                encoding=encoding,
                engine="c",
                **kwargs,
            )
    except UnicodeDecodeError:
        raise InputError(str(path), f"not valid {encoding} text", row=_bad_text_line(path, encoding),
                         expected=f"{encoding}-encoded text") from None  # fmt: skip
    except pd.errors.ParserError as exc:
        # pandas counts records (1-based here, 0-based in the EOF message), header included
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if match:
            record = int(match.group(2)) - 1
            raise InputError(
                str(path),
                f"{match.group(3)} fields",
                row=_record_line(path, sep, encoding, record) if quoted else record + 1,
                expected=f"{match.group(1)} fields separated by {_SEPARATORS.get(sep, repr(sep))}"
                + ("; a field that holds one is written in double quotes" if quoted else ""),
            ) from None
        match = re.search(r"EOF inside string starting at row (\d+)", str(exc))
        if match:
            raise InputError(
                str(path),
                "unterminated quoted field: the '\"' that opens it is never closed",
                row=_record_line(path, sep, encoding, int(match.group(1))),
                expected='a closing \'"\'; a quote inside a quoted field is doubled: ""',
            ) from None
        raise InputError(str(path), f"cannot be parsed ({exc})") from None
    except pd.errors.EmptyDataError:
        raise InputError(str(path), "the file is empty", expected="a header line and data rows") from None


def _has_bom(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(_BOM)) == _BOM


def record_lines(path: Path, sep: str, encoding: str, chunk: int = 1 << 24) -> np.ndarray | None:
    """The first line (1-based) of every record of an RFC 4180 file, the header included; None when the
    file holds no quote (then record i is line i + 1). Python's csv module splits records as pandas'
    C parser does (a quote opens a field only at its start; a lone quote after one closes is data)."""
    with open(path, "rb") as fh:
        if not any(b'"' in block for block in iter(lambda: fh.read(chunk), b"")):
            return None
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a multi-line text field may be long
    starts: list[int] = []
    try:
        with open(path, "rb") as raw:
            raw.seek(len(_BOM) if _has_bom(path) else 0)  # as _parse: the BOM is not part of the header
            text = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")
            reader = csv.reader(text, delimiter=sep, quotechar='"', doublequote=True, strict=False)
            while True:
                start = reader.line_num + 1
                try:
                    next(reader)
                except StopIteration:
                    break
                starts.append(start)
    except csv.Error:
        return None  # cannot be re-read: locations fall back to record numbers
    finally:
        csv.field_size_limit(limit)
    return np.asarray(starts, dtype=np.int64)


def _record_line(path: Path, sep: str, encoding: str, record: int) -> int:
    """First line of 0-based ``record`` (header included) of a quoted file."""
    starts = record_lines(path, sep, encoding)
    return int(starts[record]) if starts is not None and record < len(starts) else record + 1


def _check_separator_counts(path: Path, sep: str, n_fields: int, chunk: int = 1 << 26) -> None:
    """Every non-blank line must hold ``n_fields`` fields; counted on the raw bytes, chunk by chunk."""
    sep_byte, newline = ord(sep), ord("\n")
    line, seps_open, bytes_open = 1, 0, 0  # the current unfinished line: its separators and bytes so far

    def check(counts: np.ndarray, lengths: np.ndarray, first_line: int) -> None:
        bad = np.flatnonzero((counts != n_fields - 1) & ((counts > 0) | (lengths > 2)))  # blank: "", "\r"
        if bad.size:
            raise InputError(
                str(path),
                f"{counts[bad[0]] + 1} fields",
                row=first_line + int(bad[0]),
                expected=f"{n_fields} fields separated by {_SEPARATORS.get(sep, repr(sep))}",
            )

    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            data = np.frombuffer(block, dtype=np.uint8)
            ends = np.flatnonzero(data == newline)
            counts = np.bincount(np.searchsorted(ends, np.flatnonzero(data == sep_byte)), minlength=len(ends) + 1)
            counts[0] += seps_open
            lengths = np.diff(np.r_[-1, ends])  # bytes per finished line, newline included
            if len(ends):
                lengths[0] += bytes_open
                bytes_open = 0
            check(counts[: len(ends)], lengths, line)
            line += len(ends)
            seps_open = int(counts[len(ends)])
            bytes_open += len(data) - (int(ends[-1]) + 1 if len(ends) else 0)
    check(np.array([seps_open]), np.array([bytes_open + 1]), line)


def _blank_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose every cell is empty (blank lines); only rows with an empty first cell are checked."""
    blank = np.array(frame.iloc[:, 0].astype(str).str.strip() == "", dtype=bool)
    for i in np.flatnonzero(blank):
        blank[i] = all(str(v).strip() == "" for v in frame.iloc[i])
    return blank


def _check_field_counts(table: Table, sep: str) -> None:
    """Header-less files: a line with too few fields (often another separator) is reported as such."""
    last = table.frame.iloc[:, -1].astype(str).str.strip().to_numpy() == ""
    if last.any():
        i = int(np.flatnonzero(last)[0])
        first = str(table.frame.iloc[i, 0])
        hint = next(
            (
                f" (the line seems separated by {name})"
                for o, name in _SEPARATORS.items()
                if o != sep and o != " " and o in first
            ),
            "",
        )
        table.fail(
            i,
            None,
            f"too few fields{hint}",
            f"{table.frame.shape[1]} fields separated by {_SEPARATORS.get(sep, repr(sep))}",
        )


def _bad_text_line(path: Path, encoding: str) -> int | None:
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            raw.decode(encoding)
        except UnicodeDecodeError:
            return number
    return None


def read_parquet(path: str | Path, required: list[str] | tuple[str, ...] = ()) -> Table:
    """A Parquet file as a string table; 'rows' are 1-based record numbers."""
    p = check_file(path)
    try:
        frame = pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise InputError(str(p), f"not a readable Parquet file ({type(exc).__name__})", expected="Parquet") from None
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    table = Table(p, frame.astype(str).replace({"None": ""}), first_line=1)
    table.require(list(required))
    if len(frame) == 0:
        raise InputError(str(p), "no data rows", expected="at least one row")
    return table


def read_any(path: str | Path, required: list[str] | tuple[str, ...] = ()) -> Table:
    """CSV (comma-separated, header line) or Parquet, by file extension."""
    p = Path(path)
    if p.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(p, required)
    sep = "\t" if p.suffix.lower() in (".tsv", ".tab") else ","
    return read_delimited(p, sep, required=required)
