"""Prompt styles: the `chat` style (the backbone tokenizer's own chat template) renders the recipe's
turns, masks exactly the replies, and a model trained in it is evaluated in it from its export
alone."""

import json
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from tiny import labelled_runs
from transformers import AutoTokenizer

from uniner.config import CONF_DIR, asset
from uniner.data.datamodule import NERDataModule
from uniner.data.encoding import encode_conversations, encode_prompt
from uniner.data.prompts import (
    ChatTemplate,
    UniNER,
    prompt_style,
    save_prompt_style,
    saved_prompt,
    to_conversation_item,
)
from uniner.data.records import Mention, Passage
from uniner.inference.engine import Engine
from uniner.inference.planner import common_prefix_length, encode_queries

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
PASSAGE = Passage("p", "Ada Lovelace met Charles Babbage in London.", [
    Mention("Ada Lovelace", "person", 0, 12), Mention("Charles Babbage", "person", 17, 32),
    Mention("London", "location", 36, 42)])
REPLIES = ["I've read this text.<|im_end|>", '["Ada Lovelace", "Charles Babbage"]<|im_end|>',
           "[]<|im_end|>"]


def chat_tokenizer(template: str = CHATML):
    """The shipped tokenizer with ChatML's two special tokens and a chat template."""
    tok = AutoTokenizer.from_pretrained(asset("tokenizer"))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def tok():
    return chat_tokenizer()


def messages(text: str, qa: list[tuple[str, str]]) -> list[dict]:
    style = UniNER()
    out = [{"role": "system", "content": style.system},
           {"role": "user", "content": f"Text: {text}"},
           {"role": "assistant", "content": style.read_reply}]
    for type_, answer in qa:
        out += [{"role": "user", "content": style.question(type_)},
                {"role": "assistant", "content": answer}]
    return out


@pytest.mark.parametrize("train_on_read_reply", [True, False])
def test_chat_segments_are_the_template_split_at_the_replies(tok, train_on_read_reply):
    style = prompt_style("chat", tok)
    conv = style.conversation(PASSAGE, ["person", "award"], train_on_read_reply)
    qa = [("person", '["Ada Lovelace", "Charles Babbage"]'), ("award", "[]")]
    whole = tok.apply_chat_template(messages(PASSAGE.text, qa), tokenize=False)
    assert style.render(conv) + "\n" == whole  # all but what follows the last end of turn
    assert [m.content for m in conv[1::2]] == REPLIES
    assert conv[0].content.endswith("<|im_start|>assistant\n")
    assert conv[2].content == ("\n<|im_start|>user\nWhat describes person in the text?"
                               "<|im_end|>\n<|im_start|>assistant\n")
    assert [m.masked for m in conv] == [True, not train_on_read_reply, True, False, True, False]
    assert not any(m.eos for m in conv)


@pytest.mark.parametrize("train_on_read_reply", [True, False])
def test_chat_masks_cover_exactly_the_replies_and_their_end_of_turn(tok, train_on_read_reply):
    style = prompt_style("chat", tok)
    conv = style.conversation(PASSAGE, ["person", "award"], train_on_read_reply)
    enc = encode_conversations([conv], tok, max_length=None, auto_bos=style.auto_bos)[0]
    # the template's own tokens: no BOS of the encoder's (the template writes its own, if any)
    assert enc["input_ids"] == tok(style.render(conv), add_special_tokens=False)["input_ids"]
    runs = labelled_runs(tok, enc["input_ids"], enc["labels"])
    assert runs == (REPLIES if train_on_read_reply else REPLIES[1:])


def test_chat_query_is_a_training_prefix_ending_with_the_generation_prompt(tok):
    style = prompt_style("chat", tok)
    query = style.query(PASSAGE.text, "person")
    rendered = tok.apply_chat_template(messages(PASSAGE.text, [])
                                       + [{"role": "user", "content": UniNER.question("person")}],
                                       tokenize=False, add_generation_prompt=True)
    assert style.render(query) == rendered
    prompt = encode_prompt(query, tok, auto_bos=False)
    enc = encode_conversations([style.conversation(PASSAGE, ["person"])], tok, max_length=None,
                               auto_bos=False)[0]
    assert enc["input_ids"][: len(prompt)] == prompt
    assert all(lab == -100 for lab in enc["labels"][len(prompt) - 5: len(prompt)])


def test_chat_queries_of_one_text_share_the_prefix_up_to_the_question(tok):
    style = prompt_style("chat", tok)
    a, b = encode_queries([(PASSAGE.text, "person"), (PASSAGE.text, "award")], tok, style)
    shared = tok.decode(a[: common_prefix_length([a, b])])
    assert shared.endswith("<|im_start|>user\nWhat describes")


def test_chat_style_stops_at_the_end_of_turn(tok):
    style = prompt_style("chat", tok)
    assert style.end_of_turn == "<|im_end|>"
    assert style.stop_ids() == [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    assert UniNER(tok).stop_ids() == [tok.eos_token_id]
    with pytest.raises(ValueError, match="without a tokenizer"):
        UniNER().stop_ids()


def test_items_and_styles_by_name(tok):
    # the released Pile-NER-type item: the turns, unrendered (no style)
    assert to_conversation_item(PASSAGE, ["person"])["conversations"][2:] == [
        {"from": "human", "value": "What describes person in the text?"},
        {"from": "gpt", "value": json.dumps(PASSAGE.answer("person"))}]
    with pytest.raises(ValueError, match="choose one of uniner, chat"):
        prompt_style("vicuna", tok)
    with pytest.raises(ValueError, match="has none"):
        prompt_style("chat", AutoTokenizer.from_pretrained(asset("tokenizer")))
    # a template whose render of a longer conversation rewrites an earlier turn
    rewrites = chat_tokenizer("{% for m in messages %}{{ m['content'] }}{% if loop.last %}"
                              "<|im_end|>{% else %}<|im_start|>{% endif %}{% endfor %}")
    with pytest.raises(ValueError, match="not prefixes"):
        ChatTemplate(rewrites).conversation(PASSAGE, ["person"])


# --- end to end: trained in the chat style, evaluated from the export alone --------------------

def compose_cfg(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(name, overrides=overrides, return_hydra_config=True)


def test_chat_style_trains_exports_and_evaluates_from_the_export(tmp_path, monkeypatch,
                                                                   data_root):
    from uniner.cli import eval as uniner_eval
    from uniner.cli import train as uniner_train

    monkeypatch.setenv("UNINER_DATA", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    tok_dir = tmp_path / "chat_tokenizer"
    chat_tokenizer().save_pretrained(tok_dir)

    rows, prompts = [], []  # what training encoded, what the engine was asked
    encode, answer_prompts = NERDataModule.encode, Engine.answer_prompts
    monkeypatch.setattr(NERDataModule, "encode",
                        lambda self, *a: rows.append(encode(self, *a)) or rows[-1])
    monkeypatch.setattr(Engine, "answer_prompts",
                        lambda self, p, *a, **k: prompts.extend(p) or answer_prompts(self, p, *a,
                                                                                     **k))
    run = tmp_path / "train"
    cfg = compose_cfg("train", [
        "debug=smoke", "logger=none", "prompt=chat", f"backbone.tokenizer={tok_dir}",
        "backbone.config.vocab_size=4160", "trainer.max_steps=2", "benchmark.max_sentences=1",
        "module.max_new_tokens=4", f"data.cache_dir={tmp_path / 'cache'}"])
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    uniner_train.run(cfg)
    export = run / "export"
    assert saved_prompt(export) == "chat"  # prompts.save_prompt_style, beside the weights

    # training rows: the labels are exactly the assistant replies, each closed by <|im_end|>
    (train_rows,) = rows
    tok = AutoTokenizer.from_pretrained(tok_dir)
    for row in train_rows:
        text = tok.decode(row["input_ids"])
        assert text.startswith("<|im_start|>system\nA virtual assistant")
        runs = labelled_runs(tok, row["input_ids"], row["labels"])
        assert len(runs) == text.count("<|im_start|>assistant\n") >= 2
        assert runs[0] == "I've read this text.<|im_end|>"
        assert all(re.fullmatch(r"\[.*\]<\|im_end\|>", r) for r in runs[1:]), runs
    assert prompts, "training's test asked nothing"

    # uniner-eval with the export alone: its queries render in the chat template
    prompts.clear()
    out = tmp_path / "eval"
    cfg = compose_cfg("eval", [f"checkpoint={export}", "benchmark=sample",
                               "benchmark.max_sentences=1", "max_new_tokens=4"])
    with open_dict(cfg):
        del cfg["hydra"]
    assert cfg.prompt is None
    metrics = uniner_eval.run(cfg, out)
    assert metrics["sample"]["queries"] == len(prompts) > 0
    for ids in prompts:
        text = tok.decode(ids)
        assert text.startswith("<|im_start|>system\nA virtual assistant")
        assert re.search(r"<\|im_start\|>user\nWhat describes .+ in the text\?<\|im_end\|>\n"
                         r"<\|im_start\|>assistant\n$", text), text


def test_an_export_records_its_style_and_older_exports_keep_theirs(tmp_path):
    """`prompt_style.json` beside the weights; an export written before it kept the style in
    `uniner_export.json` only, and must not silently load in another template."""
    assert saved_prompt(tmp_path) == "uniner"  # nothing recorded (or a hub id): the recipe's
    (tmp_path / "uniner_export.json").write_text(json.dumps({"format": "full", "prompt": "chat"}))
    assert saved_prompt(tmp_path) == "chat"
    save_prompt_style(UniNER(chat_tokenizer()), tmp_path)
    assert saved_prompt(tmp_path) == "uniner"  # the style file wins
