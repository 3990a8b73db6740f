"""Readers: every source format -> `list[Passage]` with character spans where the source has them.

Formats: CoNLL-style BIO/IOB1/BIOES files (`read_bio`, in `bio`), the released Pile-NER-type
conversation JSON (`read_pile_ner`), the InstructUIE JSON layout (`read_instructuie`) and the
official UniversalNER evaluation files (`read_uniner_json`, one query per item), in
`json_formats`. Bad input raises `DataError` with file and line (or item), or with
`on_error="skip"` is skipped and counted in the `ReadReport` passed in (`common.read_rows`, the one
error policy). A new format is a reader here and an entry in `READERS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from uniner.data.readers.bio import LAYOUTS, SCHEMES, read_bio
from uniner.data.readers.common import ON_ERROR, json_lines, load_label_map
from uniner.data.readers.json_formats import (
    instructuie_file,
    may_be_hub_dataset,
    read_instructuie,
    read_pile_ner,
    read_uniner_json,
)
from uniner.data.records import Passage, ReadReport
from uniner.errors import ConfigError

__all__ = ["LAYOUTS", "ON_ERROR", "READERS", "SCHEMES", "json_lines", "load_label_map",
           "read_bio", "read_instructuie", "read_pile_ner", "read_source", "read_uniner_json",
           "source_files"]

# the formats a source config may name (`uniner_json` holds queries, read by the benchmark)
READERS = {
    "pile_ner": read_pile_ner,
    "bio": read_bio,
    "instructuie": read_instructuie,
}


def read_source(source: dict, report: ReadReport | None = None) -> list[Passage]:
    """The passages of a one-format source config: `{"format": ..., "path": ..., <the reader's
    other arguments>}`; `path` may be a list of paths, read in turn into one list."""
    source = dict(source)
    fmt = source.pop("format", None)
    if fmt not in READERS:
        raise ConfigError(f"format={fmt!r}: choose one of {sorted(READERS)}")
    paths = source.pop("path")
    report = report if report is not None else ReadReport(str(paths))
    passages = []
    for path in [paths] if isinstance(paths, str | os.PathLike) else list(paths):
        passages += READERS[fmt](path, report=report, **source)
    return passages


def source_files(source: Mapping) -> list[tuple[Path, bool]]:
    """The files a one-format source config (`read_source`'s) reads, found without reading them:
    `(file, may_be_hub)`, where `may_be_hub` says a hub dataset id may stand for the file."""
    fmt, paths = source.get("format"), source.get("path")
    if paths is None:
        return []
    files = []
    for path in [paths] if isinstance(paths, str | os.PathLike) else list(paths):
        if fmt == "instructuie":
            split = {"split": source["split"]} if "split" in source else {}
            files.append((instructuie_file(path, **split), False))
        else:
            files.append((Path(path), fmt == "pile_ner" and may_be_hub_dataset(path)))
    return files
