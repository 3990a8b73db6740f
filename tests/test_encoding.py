from collections import Counter

import pytest
import torch
from tiny import labelled_runs
from transformers import AutoTokenizer

from uniner.data.datamodule import collate, encode_rows, render_rows
from uniner.data.encoding import encode_conversations, encode_prompt, token_ids
from uniner.data.prompts import UniNER
from uniner.data.records import Mention, Passage

PASSAGE = Passage("p", "Ada Lovelace met Charles Babbage in London.", [
    Mention("Ada Lovelace", "person", 0, 12), Mention("Charles Babbage", "person", 17, 32),
    Mention("London", "location", 36, 42)])


@pytest.fixture(scope="module")
def tok(data_root):
    return AutoTokenizer.from_pretrained(data_root / "tokenizer_sp32k")


def test_rendered_text_is_the_template():
    style = UniNER()
    text = style.render(style.conversation(PASSAGE, ["person", "award"]))
    assert text == (
        "A virtual assistant answers questions from a user based on the provided text. "
        "USER: Text: Ada Lovelace met Charles Babbage in London. ASSISTANT: I've read this "
        "text.</s>USER: What describes person in the text? ASSISTANT: "
        "[\"Ada Lovelace\", \"Charles Babbage\"]</s>USER: What describes award in the text? "
        "ASSISTANT: []</s>")


@pytest.mark.parametrize("ignore_index", [-100, -1])
@pytest.mark.parametrize("train_on_read_reply", [True, False])
def test_exact_masks(tok, ignore_index, train_on_read_reply):
    style = UniNER()
    conv = style.conversation(PASSAGE, ["person", "award"], train_on_read_reply)
    enc = encode_conversations([conv], tok, max_length=None, ignore_index=ignore_index)[0]
    seg = [tok.encode(m.content, add_special_tokens=False) for m in conv]
    eos, bos = tok.eos_token_id, tok.bos_token_id
    ig = ignore_index
    expected_ids = [bos] + seg[0] + seg[1] + [eos] + seg[2] + seg[3] + [eos] + seg[4] + seg[5] \
        + [eos]
    read = seg[1] + [eos] if train_on_read_reply else [ig] * (len(seg[1]) + 1)
    expected_labels = [ig] * (1 + len(seg[0])) + read + [ig] * len(seg[2]) + seg[3] + [eos] \
        + [ig] * len(seg[4]) + seg[5] + [eos]
    assert enc["input_ids"] == expected_ids
    assert enc["labels"] == expected_labels
    runs = labelled_runs(tok, enc["input_ids"], enc["labels"], ignore_index)
    want = ['["Ada Lovelace", "Charles Babbage"]</s>', "[]</s>"]
    assert runs == (["I've read this text.</s>"] + want if train_on_read_reply else want)


def test_inference_prompt_is_a_training_prefix(tok):
    style = UniNER()
    enc = encode_conversations([style.conversation(PASSAGE, ["person"])], tok,
                               max_length=None)[0]
    prompt = encode_prompt(style.query(PASSAGE.text, "person"), tok)
    assert enc["input_ids"][:len(prompt)] == prompt
    assert all(lab == -100 for lab in enc["labels"][:len(prompt)][-5:])


@pytest.mark.parametrize("max_length", [None, 90, 75, 40])
def test_max_length_drops_whole_turns_and_counts(tok, max_length):
    style = UniNER()
    conv = style.conversation(PASSAGE, ["person", "location", "award"])
    full = encode_conversations([conv], tok, max_length=None)[0]
    dropped = Counter()
    enc = encode_conversations([conv], tok, max_length=max_length, dropped=dropped)[0]
    if max_length is None or max_length >= len(full["input_ids"]):
        assert enc == full and not dropped
        return
    if enc is None:
        assert dropped == {"passage too long for one question": 1}
        return
    n = len(enc["input_ids"])
    assert n <= max_length
    assert enc["input_ids"] == full["input_ids"][:n]  # a prefix: nothing cut mid-turn
    assert enc["input_ids"][-1] == tok.eos_token_id  # ends with a complete answer
    assert dropped["trailing turns cut by max_length"] >= 1


def test_encode_rows_cached_and_counts_drops(tok, tmp_path):
    style_rows = render_rows([PASSAGE, Passage("long", "word " * 300, [])],
                             [["person"], ["award"]], style=UniNER())
    ds, dropped = encode_rows(style_rows, tok, max_length=128, cache_dir=tmp_path)
    assert len(ds) == 1 and dropped == {"passage too long for one question": 1}
    assert list(tmp_path.glob("encoded-*.arrow"))
    again, dropped2 = encode_rows(style_rows, tok, max_length=128, cache_dir=tmp_path)
    assert again["input_ids"] == ds["input_ids"] and dropped2 == dropped


@pytest.mark.parametrize("ignore_index", [-100, -1])
@pytest.mark.parametrize("padding,max_length,width", [("longest", None, 3),
                                                      ("max_length", 5, 5)])
def test_collate_exact(ignore_index, padding, max_length, width):
    batch = [{"input_ids": [1, 5, 6], "labels": [ignore_index, 5, 6]},
             {"input_ids": [1, 7], "labels": [ignore_index, 7]}]
    out = collate(batch, pad_id=0, ignore_index=ignore_index, padding=padding,
                  max_length=max_length)
    pad = width - 3
    assert out["input_ids"].tolist() == [[1, 5, 6] + [0] * pad, [1, 7] + [0] * (pad + 1)]
    assert out["labels"].tolist() == [[ignore_index, 5, 6] + [ignore_index] * pad,
                                      [ignore_index, 7] + [ignore_index] * (pad + 1)]
    assert out["attention_mask"].tolist() == [[1, 1, 1] + [0] * pad, [1, 1] + [0] * (pad + 1)]
    assert out["input_ids"].dtype == torch.long


def test_fast_token_ids_equal_the_tokenizer_call(tok, data_root):
    """The Rust batch path gives exactly the ids of `tokenizer(...)` (prompts and training rows
    must agree), for the sp32k and the shipped tokenizer, special-token text included."""
    from uniner.config import asset
    from uniner.data.sources import load_passages

    texts = [p.text for p in load_passages({"format": "pile_ner", "path": asset("sample.json")})]
    texts += ["", " leading space", "ends with </s>", "naïve café — 東京 🙂",
              "USER: What describes"]
    for t in (tok, AutoTokenizer.from_pretrained(asset("tokenizer"))):
        assert token_ids(t, texts) == t(texts, add_special_tokens=False)["input_ids"]


def test_the_tokenized_cache_keeps_the_most_recently_used_within_its_cap(tmp_path):
    import os

    from uniner.data.datamodule import prune_cache

    for i in range(5):  # 100 bytes each, encoded-0 the oldest
        f = tmp_path / f"encoded-{i}.arrow"
        f.write_bytes(b"x" * 100)
        os.utime(f, (1000 + i, 1000 + i))
    (tmp_path / "other.txt").write_bytes(b"y" * 1000)  # not ours: never touched
    removed = prune_cache(tmp_path, 250, keep=tmp_path / "encoded-0.arrow")  # 0 read back: in use
    assert sorted(p.name for p in removed) == ["encoded-1.arrow", "encoded-2.arrow",
                                               "encoded-3.arrow"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoded-0.arrow", "encoded-4.arrow",
                                                          "other.txt"]


def test_collate_refuses_an_unknown_padding_mode():
    """Called directly (not through DataArgs), a misspelt mode must not pad to the longest row."""
    batch = [{"input_ids": [1, 5], "labels": [-100, 5]}]
    with pytest.raises(ValueError, match="padding='max': expected one of longest, max_length"):
        collate(batch, pad_id=0, padding="max", max_length=8)
