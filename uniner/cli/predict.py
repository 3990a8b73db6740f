"""`uniner-predict`: entities with character offsets for texts, as JSON lines.

    uniner-predict checkpoint=DIR 'input="Ada Lovelace met Charles Babbage in London."' \
        types=[person,location]
    uniner-predict checkpoint=DIR input=texts.txt types=[person] output=entities.jsonl
    uniner-predict checkpoint=DIR input=queries.jsonl       # {"text": ..., "types": [...]} a line
    cat texts.txt | uniner-predict checkpoint=DIR input=- types=[person]

One output line per input, in input order: `{"text", "entities": [{"text", "type", "start",
"end"}]}` (and the input's `id`, where it has one). A `.txt` keeps its blank lines as empty texts,
so output line n answers input line n; JSON lines skip blank lines. Stdin is read as JSON lines
when its first non-blank line starts with `{`, else as one text a line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from uniner.cli.checks import check_predict
from uniner.cli.entry import tool, user_errors
from uniner.config import CONF_DIR
from uniner.data.readers import json_lines
from uniner.data.records import DataError
from uniner.errors import ConfigError, MissingFileError
from uniner.inference.args import GenerationArgs
from uniner.progress import progress, run_directory
from uniner.threads import say_notice

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
FILE_SUFFIXES = (".txt", *JSONL_SUFFIXES)


@dataclass
class Input:
    """One text to extract from, the types asked of it, and its id (if the input row had one)."""

    text: str
    types: list[str]
    id: object = None


def _type_list(value, default: list[str], where: str) -> list[str]:
    if value is None:
        return list(default)
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ConfigError(f"{where}: \"types\" must be a list of strings, got {value!r}")
    return value


def parse_jsonl(lines: Iterable[str], source: str, default_types: list[str]) -> list[Input]:
    """Rows `{"text": str, "types": [str, ...]}` (types optional where `default_types` is set).

    Raises:
        DataError: naming `source` and the line of a row that is not such an object.
    """
    out = []
    for lineno, row in json_lines(lines, source):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError('expected an object {"text": "...", "types": [...]}', source, lineno)
        try:
            types = _type_list(row.get("types"), default_types, f"{source}:{lineno}")
        except ValueError as err:
            raise DataError(str(err).split(": ", 1)[1], source, lineno) from None
        if not types:
            raise DataError('no entity types: give "types" in the row or types=[...]', source,
                            lineno)
        out.append(Input(row["text"], types, row.get("id")))
    return out


def read_inputs(spec: str, types: list[str]) -> list[Input]:
    """The inputs of `input=`: `-` (stdin), a `.txt`/`.jsonl` file, or a literal text."""
    if spec == "-":
        lines = sys.stdin.read().splitlines()
        first = next((ln for ln in lines if ln.strip()), "")
        if first.lstrip().startswith("{"):
            return parse_jsonl(lines, "<stdin>", types)
        return _texts(lines, types, "input=- (stdin)")
    path = Path(spec)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        if path.suffix.lower() in JSONL_SUFFIXES:
            return parse_jsonl(lines, str(path), types)
        return _texts(lines, types, f"input={path}")
    if path.suffix.lower() in FILE_SUFFIXES and "\n" not in spec:
        raise MissingFileError(f"input={spec}: no such file (a literal text that ends like a "
                               "file name? put it in a .txt)")
    return _texts([spec], types, "a literal input text")


def _texts(texts: list[str], types: list[str], what: str) -> list[Input]:
    if not types:
        raise ConfigError(f"{what} has no entity types: give types=[person,location,...]")
    return [Input(t, list(types)) for t in texts]


def _emptiness(spec, inputs: list[Input]) -> str:
    what = "stdin" if spec == "-" else "the file" if Path(str(spec)).is_file() else None
    if what is None:
        return "the text is blank"
    return f"{what} is empty" if not inputs else f"{what} holds only blank texts"


def run(cfg: DictConfig) -> int:
    """Read `cfg.input`, extract, write JSON lines; returns the number of inputs."""
    types = cfg.types
    if isinstance(types, str):
        types = [types]
    types = OmegaConf.to_container(types) if isinstance(types, ListConfig) else list(types)
    types = _type_list(types, [], "types=")
    inputs = read_inputs(str(cfg.input), types)  # bad input fails before the model loads
    if not any(i.text.strip() for i in inputs):
        raise ConfigError(f"input={cfg.input}: no text to extract from "
                          f"({_emptiness(cfg.input, inputs)})")
    if cfg.chunk < 1:
        raise ConfigError(f"chunk={cfg.chunk}: must be >= 1")
    from uniner.inference.extractor import Extractor  # heavy: after the input is checked

    extractor = Extractor.from_pretrained(cfg.checkpoint,
                                          **GenerationArgs.of(cfg).extractor_args())
    total = sum(len(dict.fromkeys(i.types)) for i in inputs if i.text.strip())
    out = open(cfg.output, "w", encoding="utf-8") if cfg.output else sys.stdout
    try:
        with progress("predict", total, "queries", enabled=cfg.progress) as bar:
            for start in range(0, len(inputs), cfg.chunk):
                chunk = inputs[start: start + cfg.chunk]
                found = extractor.extract([i.text for i in chunk], [i.types for i in chunk],
                                          progress=bar.update)
                for item, entities in zip(chunk, found):
                    row = {"id": item.id} if item.id is not None else {}
                    row |= {"text": item.text, "entities": [e.to_dict() for e in entities]}
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return len(inputs)


@tool("uniner-predict")
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors("uniner-predict"):
        check_predict(cfg)
        out = HydraConfig.get().runtime.output_dir
        if cfg.output:  # the run directory holds the log of a run that writes a file
            run_directory(out)
        say_notice()
        n = run(cfg)
    print(f"{n} input{'' if n == 1 else 's'} -> {cfg.output or 'stdout'}", file=sys.stderr)
    if cfg.output:
        run_directory(out)


if __name__ == "__main__":
    main()
