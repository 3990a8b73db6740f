"""`uniner-demo`: a local web page to try a trained model: paste a text, name the entity types,
see the entities highlighted in place (coloured by type) beside their JSON with character offsets.

    uniner-demo                                   # the newest export under outputs/train/
    uniner-demo checkpoint=outputs/train/<name>/<time>/export port=7860 device=cuda dtype=bf16

Answers come from `Extractor` (the engine of `uniner-eval`: shared prefixes, token-budget
batches). A text longer than the model's context is cut into passages
(`inference.passages`), all answered in one engine call. What the page answers and shows is in
`demo_page`; here: the checkpoint, the port, the model card and the Gradio wiring.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from uniner.cli.checks import check_demo
from uniner.cli.demo_page import (
    SAMPLE,
    Demo,
    DemoError,
    dataset_presets,
    error_summary,
    read_examples,
    sample_examples,
)
from uniner.cli.entry import tool, user_errors
from uniner.config import CONF_DIR
from uniner.inference.args import GenerationArgs
from uniner.model.paths import hub_like, is_model_dir
from uniner.threads import say_notice

log = logging.getLogger(__name__)

EXPORT_GLOB = "*/*/export"  # outputs/train/<name>/<time>/export, as uniner-train writes it


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
    if path.is_dir() and (path / "export").is_dir() and not is_model_dir(path):
        return str(path / "export")  # a uniner-train run directory
    if not path.exists() and not hub_like(str(checkpoint)):
        raise DemoError(f"checkpoint={checkpoint}: no such directory (give an export of "
                        "uniner-train, or a Hugging Face hub id such as org/name)")
    return str(checkpoint)


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


def model_card(path: str, extractor, *, device: str, context: int, cfg: DictConfig) -> str:
    """Markdown lines naming the model and the settings it answers with."""
    from uniner.model.export import EXPORT_CONFIG, EXPORT_INFO

    model = extractor.engine.model
    params = sum(p.numel() for p in model.parameters())
    info, name = {}, None
    export = Path(path)
    if (export / EXPORT_INFO).is_file():
        info = json.loads((export / EXPORT_INFO).read_text())
    if (export / EXPORT_CONFIG).is_file():
        trained = OmegaConf.load(export / EXPORT_CONFIG)
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
        extractor = Extractor.from_pretrained(path, **GenerationArgs.of(cfg).extractor_args())
    except Exception as err:
        log.debug("loading %s failed", path, exc_info=True)
        raise DemoError(f"cannot load checkpoint={path}: {error_summary(err)}") from None
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
    """The `data.max_length` the export was trained with (its config, `EXPORT_CONFIG`)."""
    from uniner.model.export import EXPORT_CONFIG

    file = Path(path) / EXPORT_CONFIG
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
        # quiet: Gradio's own lines end in a hint to `share=True`, which is a setting here
        page.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share,
                    inbrowser=cfg.inbrowser, show_error=False, ssr_mode=False, quiet=True,
                    footer_links=["gradio"], css=CSS, prevent_thread_lock=True)
    except OSError as err:  # the port is taken, the host is not this machine's
        raise DemoError(f"cannot serve on {cfg.host}:{cfg.port or '7860+'}: {error_summary(err)}") \
            from None
    public = f" and {page.share_url}" if page.share_url else ""
    print(f"uniner-demo: serving {page.local_url}{public} (Ctrl-C stops)", file=sys.stderr,
          flush=True)
    page.block_thread()


@tool("uniner-demo")
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
        say_notice()
        run(cfg, path)


if __name__ == "__main__":
    main()
