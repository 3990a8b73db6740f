"""What every reader shares: UTF-8 text, label maps, JSON items and the one error policy
(`read_rows`: raise on a bad row, or skip and count it)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from uniner.data.records import DataError, ReadReport
from uniner.errors import ConfigError

ON_ERROR = ("raise", "skip")

T = TypeVar("T")


class RowError(DataError):
    """A DataError with a short `kind`, the key `on_error="skip"` counts it under."""

    def __init__(self, kind: str, message: str, path: str | Path | None, line: int | None):
        super().__init__(f"{kind}: {message}", path, line)
        self.kind = kind


def check(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: choose one of {', '.join(choices)}")


def read_rows(rows: Iterable[tuple | RowError], read: Callable[..., T], *, on_error: str,
              report: ReadReport) -> list[T]:
    """`read(*row, counts)` of every row, in order: the readers' one error policy.

    A row is a tuple of `read`'s arguments, or a `RowError` standing for a row that could not be
    taken apart (a JSON line that does not parse). `read` adds what it keeps, drops and repairs
    to `counts` (a fresh ReadReport per row: `mentions`, `dropped_mentions`, `notes`); they
    reach `report` only when the row is kept, and `report.passages` counts the kept rows. A row
    whose `read` raises a RowError raises it with `on_error="raise"`; with `"skip"` it is left
    out, counted in `report.skipped_rows` and in `report.notes` under its kind.
    """
    check("on_error", on_error, ON_ERROR)
    out = []
    for row in rows:
        counts = ReadReport(report.source)
        try:
            if isinstance(row, RowError):
                raise row
            value = read(*row, counts)
        except RowError as err:
            if on_error == "raise":
                raise
            report.skipped_rows += 1
            report.count(err.kind)
            continue
        out.append(value)
        report.mentions += counts.mentions
        report.dropped_mentions += counts.dropped_mentions
        for what, n in counts.notes.items():
            report.count(what, n)
    report.passages += len(out)
    return out


def read_text(path: str | Path) -> str:
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")  # drops a leading BOM
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 ({err.reason})", path, raw[: err.start].count(b"\n") + 1
                        ) from None


def load_label_map(path_or_dict: str | os.PathLike | Mapping | None) -> dict[str, str | None]:
    """Read a label map: raw type -> natural-language type name, or None to drop the type.

    Args:
        path_or_dict: a mapping (a dict or an OmegaConf DictConfig), or the path of a YAML or
            JSON file holding one.

    Returns:
        A plain dict with string keys and string-or-None values.

    Raises:
        DataError: the file or mapping is not such a map (e.g. a YAML key read as a boolean).
    """
    where = None
    if isinstance(path_or_dict, str | os.PathLike):
        where = Path(path_or_dict)
        text = read_text(where)
        if where.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    else:
        data = path_or_dict
    if not isinstance(data, Mapping):
        raise DataError(f"a label map must be a mapping, got {type(data).__name__}", where)
    out = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise DataError(f"label map key {key!r} is not a type name (quote it in YAML)", where)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise DataError(f"label map value of {key!r} must be a type name or null, got "
                            f"{value!r}", where)
        out[key] = value
    return out


def json_lines(lines: Iterable[str], source) -> Iterator[tuple[int, object]]:
    """(line number, value) of every non-blank JSON line; a line that does not parse is a
    `DataError` naming `source` and the line."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"not valid JSON ({err.msg})", source, lineno) from None


def json_items(path: Path) -> Iterator[tuple[int, int | None, object] | RowError]:
    """Rows (1-based item number, line or None, item) of a JSON list or a JSON-lines file; a
    JSON line that does not parse is a `RowError` row (`read_rows` raises or skips it)."""
    text = read_text(path)
    if path.suffix == ".jsonl":
        k = 0
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            k += 1
            try:
                yield k, lineno, json.loads(line)
            except json.JSONDecodeError as err:
                yield RowError("bad JSON", f"item {k}: {err.msg}", path, lineno)
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg})", path, err.lineno) from None
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of items, got {type(data).__name__}", path)
    yield from ((k, None, item) for k, item in enumerate(data, 1))


def item_error(kind: str, message: str, k: int, item: object, path, line) -> RowError:
    """A RowError naming the item (1-based) and its id, if it has one."""
    pid = item.get("id") if isinstance(item, Mapping) else None
    return RowError(kind, f"item {k}{f' (id {pid!r})' if pid is not None else ''}: {message}",
                    path, line)
