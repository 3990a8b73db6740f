"""`uniner-demo`: a local web page to try a trained model: paste a text, name the entity types,
see the entities highlighted in place (coloured by type) beside their JSON with character offsets.

    uniner-demo                                   # the newest export under outputs/train/
    uniner-demo checkpoint=outputs/train/<name>/<time>/export port=7860 device=cuda dtype=bf16

Answers come from `Extractor` (the engine of `uniner-eval`: shared prefixes, token-budget
batches). A text longer than the model's context is cut into passages on sentence (else word,
else character) boundaries, all answered in one engine call, and their entities' offsets mapped
back onto the whole text. The library logic (passages, highlight segments, the newest export, the
page's messages) is plain functions; the Gradio wiring at the bottom is thin.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from uniner.cli.checks import check_demo, user_errors
from uniner.config import ASSETS, CONF_DIR
from uniner.errors import UserError

log = logging.getLogger(__name__)

EXPORT_GLOB = "*/*/export"  # outputs/train/<name>/<time>/export, as uniner-train writes it
SAMPLE = ASSETS / "sample.json"
DATASETS_DIR = Path(CONF_DIR) / "benchmark" / "datasets"
SAFETY_TOKENS = 8  # a passage may tokenize a little longer inside the prompt than alone
MIN_PASSAGE_TOKENS = 16
# Tableau 10: distinct; white labels read on them, black text on them at half opacity
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f", "#ff9da7",
           "#79706e", "#edc948", "#76b7b2")


class DemoError(UserError):
    """A problem the user can fix, said in one line (no traceback)."""


# ------------------------------------------------------------------------------ checkpoints


def newest_export(root: str | Path = "outputs/train") -> Path | None:
    """The most recently modified `<root>/<name>/<time>/export` directory, or None."""
    exports = [p for p in Path(root).glob(EXPORT_GLOB) if p.is_dir()]
    return max(exports, key=lambda p: p.stat().st_mtime) if exports else None


def resolve_checkpoint(checkpoint: str | None, root: str | Path = "outputs/train") -> str:
    """The checkpoint to load: `checkpoint` (a run directory means its `export/`), else the
    newest export under `root`.

    Raises:
        DemoError: no checkpoint given and none found, or a local path that does not exist.
    """
    if checkpoint is None or str(checkpoint).strip() == "":
        found = newest_export(root)
        if found is None:
            raise DemoError(f"no trained model: no export under {Path(root).resolve()}; train one "
                            "with `uniner-train experiment=overfit` (about 2 minutes on a CPU), or "
                            "pass checkpoint=<export dir or hub id>")
        return str(found)
    path = Path(str(checkpoint)).expanduser()
    if path.is_dir() and (path / "export").is_dir() and not _looks_like_model(path):
        return str(path / "export")  # a uniner-train run directory
    if not path.exists() and (path.is_absolute() or str(checkpoint).startswith((".", "~"))
                              or str(checkpoint).count("/") > 1):
        raise DemoError(f"checkpoint={checkpoint}: no such directory (give an export of "
                        "uniner-train, or a Hugging Face hub id such as org/name)")
    return str(checkpoint)


def _looks_like_model(path: Path) -> bool:
    return any((path / f).is_file() for f in ("config.json", "adapter_config.json"))


def check_port(host: str, port: int | None) -> None:
    """Fail early (before the model loads) when `port` is taken or `host` not this machine's.

    Raises:
        DemoError: naming host and port.
    """
    if port is None:
        return
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind((host, port))
    except OSError as err:
        raise DemoError(f"cannot serve on {host}:{port}: {err.strerror or err} (another "
                        "server there? port=null takes the first free one from 7860)") from None


def one_line(err: BaseException, limit: int = 300) -> str:
    """`err` as one line: its type and first line of message, cut at `limit` characters."""
    text = str(err).strip().splitlines()
    msg = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


# ------------------------------------------------------------------------------ inputs


def parse_types(field_text: str | None) -> list[str]:
    """Entity type names from a comma (or newline or semicolon) separated field: stripped,
    blanks and repeats dropped, first-seen order kept."""
    parts = re.split(r"[,;\n]", field_text or "")
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def dataset_presets(names: Iterable[str], datasets_dir: str | Path = DATASETS_DIR
                    ) -> dict[str, list[str]]:
    """Type lists of benchmark datasets, read from their `label_map` in
    `conf/benchmark/datasets/<name>.yaml` (the official names; `null` ones, like misc, left out).
    A name without such a file or map is skipped with a warning."""
    out = {}
    for name in names:
        path = Path(datasets_dir) / f"{name}.yaml"
        node = OmegaConf.load(path) if path.is_file() else None
        label_map = node.get("label_map") if node is not None else None
        if not label_map:
            log.warning("preset %s: no label_map in %s; left out", name, path)
            continue
        out[name] = list(dict.fromkeys(v for v in label_map.values() if v))
    return out


def sample_examples(path: str | Path = SAMPLE, n: int = 5) -> list[tuple[str, list[str]]]:
    """The first `n` passages of a Pile-NER-type JSON file (the shipped sample by default), each
    with the types its conversation asks."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for row in rows[:n]:
        turns = [t["value"] for t in row["conversations"] if t["from"] == "human"]
        text = turns[0].removeprefix("Text: ")
        types = [m.group(1) for t in turns[1:]
                 if (m := re.fullmatch(r"What describes (.+) in the text\?", t))]
        out.append((text, list(dict.fromkeys(types))))
    return out


def read_examples(path: str | Path) -> list[tuple[str, list[str]]]:
    """Examples from JSON lines `{"text": ..., "types": [...]}` (uniner-predict's input)."""
    out = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append((str(row["text"]), [str(t) for t in row["types"]]))
        except (ValueError, KeyError, TypeError) as err:
            raise DemoError(f"{path}:{lineno}: expected {{\"text\": ..., \"types\": [...]}} "
                            f"({one_line(err)})") from None
    return out


# ------------------------------------------------------------------------------ passages


_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*\s+|\n\s*")
_WORD_END = re.compile(r"\s+")


def _units(text: str, start: int, end: int, level: int) -> list[tuple[int, int]]:
    """`text[start:end]` cut into sentences (level 0) or words (level 1), covering it all."""
    pattern = _SENTENCE_END if level == 0 else _WORD_END
    cuts = [start + m.end() for m in pattern.finditer(text[start:end])]
    bounds = [start] + [c for c in cuts if start < c < end] + [end]
    return list(zip(bounds, bounds[1:]))


def split_passages(text: str, count_tokens: Callable[[str], int], budget: int
                   ) -> list[tuple[int, int]]:
    """Cut `text` into passages of at most `budget` tokens (`count_tokens`), whole sentences when
    they fit, else whole words, else characters. Returns `(start, end)` character spans in
    order, without leading or trailing white space; `text[start:end]` is the passage."""
    if budget < 1:
        raise ValueError(f"budget={budget}: must be >= 1")
    spans: list[tuple[int, int]] = []
    _pack(text, 0, len(text), count_tokens, budget, 0, spans)
    out = []
    for s, e in spans:
        piece = text[s:e]
        s, e = s + len(piece) - len(piece.lstrip()), e - (len(piece) - len(piece.rstrip()))
        if e > s:
            out.append((s, e))
    return out


def _pack(text, start, end, count, budget, level, out) -> None:
    if count(text[start:end]) <= budget:
        out.append((start, end))
        return
    if level == 2:  # one word longer than a passage: the longest prefixes that fit
        while start < end:
            lo, hi = start + 1, end  # find the largest cut in [lo, hi] that fits (at least lo)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if count(text[start:mid]) <= budget else (lo, mid - 1)
            out.append((start, lo))
            start = lo
        return
    units = _units(text, start, end, level)
    if len(units) == 1:
        _pack(text, start, end, count, budget, level + 1, out)
        return
    cur = None  # start of the passage being filled
    for a, b in units:
        if cur is not None and count(text[cur:b]) <= budget:
            continue  # the unit joins the passage
        if cur is not None:
            out.append((cur, a))
            cur = None
        if count(text[a:b]) <= budget:
            cur = a
        else:
            _pack(text, a, b, count, budget, level + 1, out)
    if cur is not None:
        out.append((cur, end))


def shift_entities(text: str, spans: Sequence[tuple[int, int]],
                   found: Sequence[Sequence]) -> list[dict]:
    """Entities found in each passage (`found[i]` for `text[spans[i][0]:spans[i][1]]`, objects
    with text/type/start/end) as dicts with offsets into the whole `text`, sorted by position."""
    out = []
    for (s, _), ents in zip(spans, found):
        for e in ents:
            ent = {"text": e.text, "type": e.type, "start": e.start + s, "end": e.end + s}
            if text[ent["start"]: ent["end"]] != ent["text"]:
                raise AssertionError(f"offset mapping is off for {ent}")  # a bug, never input
            out.append(ent)
    out.sort(key=lambda d: (d["start"], d["end"], d["type"]))
    return out


# ------------------------------------------------------------------------------ highlighting


def highlight_segments(text: str, entities: Sequence[dict], type_order: Sequence[str] = ()
                       ) -> list[tuple[str, str | None]]:
    """The text as `(piece, label)` segments for a highlighted view, in order, covering it all.

    Segments are cut at every entity edge; a segment's label names every type covering it
    (`"city + location"` where entities overlap, in `type_order` then alphabetical order), None
    for plain text. Adjacent entities stay separate segments."""
    rank = {t: i for i, t in enumerate(type_order)}
    edges = sorted({0, len(text)} | {e["start"] for e in entities} | {e["end"] for e in entities})
    out: list[tuple[str, str | None]] = []
    for a, b in zip(edges, edges[1:]):
        if b <= a:
            continue
        types = {e["type"] for e in entities if e["start"] <= a and e["end"] >= b}
        label = " + ".join(sorted(types, key=lambda t: (rank.get(t, len(rank)), t))) or None
        if label is None and out and out[-1][1] is None:
            out[-1] = (out[-1][0] + text[a:b], None)
        else:
            out.append((text[a:b], label))
    return out


def color_map(labels: Iterable[str], types: Sequence[str]) -> dict[str, str]:
    """A colour per label: each type its palette colour (by its position in `types`), a
    combined label (`a + b`) the average of its types' colours."""
    def rgb(t: str) -> tuple[int, ...]:
        i = types.index(t) if t in types else sum(map(ord, t))
        c = PALETTE[i % len(PALETTE)]
        return tuple(int(c[k: k + 2], 16) for k in (1, 3, 5))

    out = {}
    for label in labels:
        parts = [rgb(t) for t in label.split(" + ")]
        out[label] = "#" + "".join(f"{sum(ch) // len(parts):02x}" for ch in zip(*parts))
    return out


# ------------------------------------------------------------------------------ answering


@dataclass
class Answer:
    """What the page shows: the highlighted segments, the entities (JSON) and a status line."""

    segments: list[tuple[str, str | None]] | None
    entities: list[dict] | None
    message: str
    ok: bool
    colors: dict[str, str] = field(default_factory=dict)


def error(message: str) -> Answer:
    return Answer(None, None, f"⚠️ {message}", False)


class Demo:
    """Answers the page's requests with an `Extractor`-like object (`extract(texts, types)`).

    Args:
        extractor: the model; `extract(list_of_texts, types)` returns entities per text.
        count_tokens: tokens of a passage alone.
        prompt_tokens: tokens of the prompt around an empty passage for a type.
        context: tokens a prompt and its answer may take.
        max_new_tokens: tokens an answer may take.
        max_chars: longest text accepted.
    """

    def __init__(self, extractor, *, count_tokens: Callable[[str], int],
                 prompt_tokens: Callable[[str], int], context: int, max_new_tokens: int,
                 max_chars: int = 100_000):
        self.extractor, self.count_tokens, self.prompt_tokens = extractor, count_tokens, \
            prompt_tokens
        self.context, self.max_new_tokens, self.max_chars = context, max_new_tokens, max_chars

    def budget(self, types: Sequence[str]) -> int:
        """Tokens a passage may take so that every type's prompt and answer fit the context."""
        overhead = max(self.prompt_tokens(t) for t in types)
        return self.context - self.max_new_tokens - overhead - SAFETY_TOKENS

    def answer(self, text: str | None, types_field: str | None) -> Answer:
        text = text or ""
        types = parse_types(types_field)
        if not text.strip():
            return error("**No text**: paste or type a text in the box, or click an example.")
        if not types:
            return error("**No entity types**: name at least one, comma separated (e.g. "
                         "`person, location`), or choose a preset.")
        if len(text) > self.max_chars:
            return error(f"**Text too long**: {len(text):,} characters; this page takes at most "
                         f"{self.max_chars:,} (`max_chars=`). Use `uniner-predict` for files.")
        budget = self.budget(types)
        if budget < MIN_PASSAGE_TOKENS:
            return error(f"**Type names too long**: with them the model's context "
                         f"({self.context} tokens, {self.max_new_tokens} kept for the answer) "
                         "leaves no room for the text. Use shorter type names.")
        started = time.perf_counter()
        try:
            spans = split_passages(text, self.count_tokens, budget)
            found = self.extractor.extract([text[s:e] for s, e in spans], types)
            entities = shift_entities(text, spans, found)
        except Exception as err:  # the page shows one line; the terminal the traceback
            log.exception("extraction failed")
            return error(f"**Extraction failed**: {one_line(err)} (the traceback is in the "
                         "terminal).")
        seconds = time.perf_counter() - started
        segments = highlight_segments(text, entities, types)
        colors = color_map(dict.fromkeys(lab for _, lab in segments if lab), types)
        n_types = len({e["type"] for e in entities})
        message = (f"{len(entities)} entit{'y' if len(entities) == 1 else 'ies'} of {n_types} "
                   f"type{'' if n_types == 1 else 's'} ({len(types)} asked, "
                   f"{len(types) * len(spans)} queries) in {seconds:.2f} s.")
        if len(spans) > 1:
            message += (f" The text is longer than the model's context ({budget} tokens of text "
                        f"a query): it was read as {len(spans)} passages, cut between sentences; "
                        "an entity across a cut can be missed.")
        return Answer(segments, entities, message, True, colors)


def model_card(path: str, extractor, *, device: str, context: int, cfg: DictConfig) -> str:
    """Markdown lines naming the model and the settings it answers with."""
    model = extractor.engine.model
    params = sum(p.numel() for p in model.parameters())
    info, name = {}, None
    export = Path(path)
    if (export / "uniner_export.json").is_file():
        info = json.loads((export / "uniner_export.json").read_text())
    if (export / "uniner_config.yaml").is_file():
        trained = OmegaConf.load(export / "uniner_config.yaml")
        name = OmegaConf.select(trained, "name")
        backbone = OmegaConf.select(trained, "backbone.name")
        name = " · ".join(str(x) for x in (name and f"run `{name}`",
                                           backbone and f"backbone `{backbone}`") if x)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    parts = [f"**Model** `{path}`", name or None,
             f"{info.get('format', 'model')}, {params / 1e6:,.1f}M parameters"]
    settings = [f"device `{device}`", f"dtype `{dtype}`", f"decoding `{cfg.decoding}`",
                f"max_new_tokens {cfg.max_new_tokens}", f"context {context} tokens"]
    return " · ".join(p for p in parts if p) + "  \n**Settings** " + " · ".join(settings)


# ------------------------------------------------------------------------------ the page


def load(cfg: DictConfig, path: str):
    """The `Extractor` of the checkpoint at `path` and a `Demo` around it.

    Raises:
        DemoError: a checkpoint that cannot be loaded (one line).
    """
    from uniner import Extractor

    print(f"uniner-demo: loading {path}", file=sys.stderr)
    try:
        quant = cfg.get("quant")
        extractor = Extractor.from_pretrained(
            path, device=cfg.device, dtype=cfg.dtype,
            quant=OmegaConf.to_container(quant, resolve=True) if quant is not None else None,
            max_new_tokens=cfg.max_new_tokens, batch_tokens=cfg.batch_tokens,
            batch_rows=cfg.batch_size, decoding=cfg.decoding)
    except Exception as err:
        log.debug("loading %s failed", path, exc_info=True)
        raise DemoError(f"cannot load checkpoint={path}: {one_line(err)}") from None
    engine = extractor.engine
    context = cfg.context or _trained_context(path) or \
        getattr(engine.model.config, "max_position_embeddings", None) or 2048
    demo = Demo(extractor,
                count_tokens=lambda s: len(engine.tokenizer(s, add_special_tokens=False)
                                           ["input_ids"]),
                prompt_tokens=lambda t: len(engine.prompt("", t)), context=int(context),
                max_new_tokens=cfg.max_new_tokens, max_chars=cfg.max_chars)
    return extractor, demo


def _trained_context(path: str) -> int | None:
    """The `data.max_length` the export was trained with (its `uniner_config.yaml`)."""
    file = Path(path) / "uniner_config.yaml"
    if not file.is_file():
        return None
    value = OmegaConf.select(OmegaConf.load(file), "data.max_length")
    return int(value) if value else None


# the text flows as text (Gradio lays its pieces out as flex items, each wrapping whole)
CSS = """
#uniner-status {min-height: 1.5em}
#uniner-highlight .textfield {display: block; word-break: normal; line-height: 2.2;
                              font-size: 1.05em}
#uniner-highlight .highlighted {display: inline-block; max-width: 100%; margin: 0 2px;
                                padding: 0 4px; line-height: 1.8}
#uniner-highlight .line-break {display: block}
#uniner-highlight .line-break + .line-break {height: 0.8em}
"""


def build_page(demo: Demo, card: str, presets: dict[str, list[str]],
               examples: list[tuple[str, list[str]]]):
    """The Gradio page around `demo` (not launched)."""
    import gradio as gr

    def submit(text, types_field):
        ans = demo.answer(text, types_field)
        return (gr.update(value=ans.segments, color_map=ans.colors), ans.entities, ans.message)

    def use_preset(name):
        return ", ".join(presets.get(name, [])) if name else gr.update()

    with gr.Blocks(title="uniner demo", analytics_enabled=False) as page:
        gr.Markdown("## uniner: open named-entity recognition\nPaste a text, name the entity "
                    "types you want (any names, comma separated), and press **Extract** (or "
                    "Enter in the types, Shift+Enter in the text).")
        gr.Markdown(card, elem_id="uniner-model")
        with gr.Row():
            with gr.Column(scale=1):
                text = gr.Textbox(label="Text", lines=9, max_lines=30, elem_id="uniner-text",
                                  placeholder="Ada Lovelace met Charles Babbage in London.")
                types = gr.Textbox(label="Entity types (comma separated)", lines=1,
                                   elem_id="uniner-types", placeholder="person, location")
                preset = gr.Dropdown(choices=list(presets), value=None, label="Preset: the "
                                     "label set of a benchmark dataset", elem_id="uniner-preset")
                with gr.Row():
                    clear = gr.ClearButton(value="Clear")
                    run = gr.Button("Extract", variant="primary", elem_id="uniner-submit")
            with gr.Column(scale=1):
                status = gr.Markdown(elem_id="uniner-status")
                highlighted = gr.HighlightedText(label="Entities", show_legend=False,
                                                 combine_adjacent=False,
                                                 elem_id="uniner-highlight")
                found = gr.JSON(label="JSON (character offsets into the text)", open=True,
                                max_height=420,
                                elem_id="uniner-json")
        if examples:
            gr.Examples([[t, ", ".join(ts)] for t, ts in examples], inputs=[text, types],
                        label="Examples (click one, then Extract)", elem_id="uniner-examples")
        clear.add([text, types, highlighted, found, status])
        preset.change(use_preset, preset, types, api_visibility="private")
        outputs = [highlighted, found, status]
        run.click(submit, [text, types], outputs, api_name="extract")
        for box in (text, types):  # Enter in the types, Shift+Enter in the text
            box.submit(submit, [text, types], outputs, api_visibility="private")
    return page


def run(cfg: DictConfig, path: str) -> None:
    """Load the model at `path` and serve the page until interrupted."""
    extractor, demo = load(cfg, path)
    presets = dataset_presets(cfg.presets)
    examples = read_examples(cfg.examples_file) if cfg.examples_file else \
        sample_examples(SAMPLE, cfg.num_examples)
    if examples:
        presets = {"sample passages": list(dict.fromkeys(t for _, ts in examples for t in ts)),
                   **presets}
    device = str(next(extractor.engine.model.parameters()).device)
    card = model_card(path, extractor, device=device, context=demo.context, cfg=cfg)
    page = build_page(demo, card, presets, examples)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    page.queue(default_concurrency_limit=1)  # one model: requests answered one after another
    try:
        page.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share,
                    inbrowser=cfg.inbrowser, show_error=False, ssr_mode=False, quiet=False,
                    footer_links=["gradio"], css=CSS)
    except OSError as err:  # the port is taken, the host is not this machine's
        raise DemoError(f"cannot serve on {cfg.host}:{cfg.port or '7860+'}: {one_line(err)}") \
            from None


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="demo")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing sent anywhere
    with user_errors("uniner-demo"):
        check_demo(cfg)
        path = resolve_checkpoint(cfg.checkpoint, cfg.outputs_root)
        check_port(cfg.host, cfg.port)
        try:
            import gradio  # noqa: F401
        except ImportError:
            raise DemoError("the demo needs Gradio: pip install 'uniner[demo]'") from None
        run(cfg, path)


if __name__ == "__main__":
    main()
