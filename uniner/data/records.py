"""The one in-memory form every source is read into: a passage with typed mentions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from uniner.errors import UserError


class DataError(UserError, ValueError):
    """Bad input, with the place it came from (`file:line: message`)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path, self.line, self.reason = path, line, message
        where = f"{path}:{line}: " if path is not None and line is not None else (
            f"{path}: " if path is not None else "")
        super().__init__(where + message)


@dataclass(frozen=True)
class Mention:
    """One typed entity mention. `start`/`end` are character offsets into the passage text
    (end exclusive) when the source has them, else None."""

    text: str
    type: str
    start: int | None = None
    end: int | None = None


@dataclass
class Passage:
    """A passage of text with its typed mentions.

    `negatives` holds types the source itself asked about with an empty answer (Pile-NER-type's
    baked-in `[]` questions); negative sampling decides whether to keep them.
    """

    id: str
    text: str
    mentions: list[Mention] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        """Distinct positive types in order of first appearance."""
        return list(dict.fromkeys(m.type for m in self.mentions))

    def answer(self, type_: str) -> list[str]:
        """Distinct mention strings of `type_`, in order of first appearance (the gold answer)."""
        of_type = [m for m in self.mentions if m.type == type_]
        if all(m.start is not None for m in of_type):
            of_type.sort(key=lambda m: (m.start, m.end))  # stable: source order breaks ties
        return list(dict.fromkeys(m.text for m in of_type))


@dataclass
class ReadReport:
    """What a reader dropped or repaired, so that nothing is lost silently."""

    source: str
    passages: int = 0
    mentions: int = 0
    skipped_rows: int = 0
    dropped_mentions: int = 0
    notes: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.notes[what] = self.notes.get(what, 0) + n
