"""The shipped assets: the embedded sample (Pile-NER-type conversations) and the tiny tokenizer."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from uniner.data.prompts import UniNER

ASSETS = Path(__file__).resolve().parents[1] / "uniner" / "assets"
QUESTION = re.compile(r"What describes (.+) in the text\?")


def occurrences(text: str, mention: str) -> list[int]:
    """Start offsets of `mention` in `text` as a whole (not inside a longer word)."""
    head = r"(?<!\w)" if mention[0].isalnum() else ""
    tail = r"(?!\w)" if mention[-1].isalnum() else ""
    return [m.start() for m in re.finditer(head + re.escape(mention) + tail, text)]


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    return json.loads((ASSETS / "sample.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def passages(sample) -> list[tuple[str, dict[str, list[str]]]]:
    """(text, {type: answer}) per item, after checking the conversation shape."""
    out = []
    for item in sample:
        turns = item["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("Text: ")
        assert turns[1]["value"] == "I've read this text."
        answers = {}
        for q, a in zip(turns[2::2], turns[3::2]):
            match = QUESTION.fullmatch(q["value"])
            assert match, q["value"]
            assert match.group(1) not in answers, f"{item['id']}: {match.group(1)} asked twice"
            answers[match.group(1)] = json.loads(a["value"])
        out.append((turns[0]["value"].removeprefix("Text: "), answers))
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(ASSETS / "tokenizer"), local_files_only=True)


def test_sample_shape(sample, passages):
    assert len(sample) == 48
    assert [item["id"] for item in sample] == [f"sample_{i:03d}" for i in range(48)]
    assert len({text for text, _ in passages}) == 48
    for text, answers in passages:
        assert 25 <= len(text.split()) <= 70, text
        assert 3 <= len(answers) <= 6, text
        assert 4 <= sum(len(a) for a in answers.values()) <= 10, text
        for type_ in answers:
            assert type_ == type_.strip() and type_ == type_.lower(), type_


def test_sample_answers_are_grounded_ordered_and_positive(passages):
    for text, answers in passages:
        for type_, answer in answers.items():
            assert answer, f"[] answer for {type_!r}: negatives are sampled at training time"
            assert all(isinstance(m, str) and m == m.strip() and m for m in answer)
            assert len(set(answer)) == len(answer), (type_, answer)
            firsts = []
            for mention in answer:
                assert mention in text, (mention, text)
                found = occurrences(text, mention)
                assert found, f"{mention!r} occurs only inside a longer word: {text}"
                firsts.append(found[0])
            assert firsts == sorted(firsts), (type_, answer)


def test_sample_is_consistently_annotated(passages):
    """A mention string has one type everywhere, and is annotated wherever it occurs as a whole
    (unless it is part of a longer annotated mention)."""
    types_of: dict[str, set[str]] = {}
    for _, answers in passages:
        for type_, answer in answers.items():
            for mention in answer:
                types_of.setdefault(mention, set()).add(type_)
    assert {m: t for m, t in types_of.items() if len(t) > 1} == {}
    for text, answers in passages:
        annotated = {m for answer in answers.values() for m in answer}
        spans = [(p, p + len(m)) for m in annotated for p in occurrences(text, m)]
        for mention in types_of.keys() - annotated:
            for p in occurrences(text, mention):
                assert any(a <= p and p + len(mention) <= b for a, b in spans), (mention, text)


def test_sample_type_inventory(passages):
    freq = Counter(type_ for _, answers in passages for type_ in answers)
    assert len(freq) > 40
    for common in ("person", "organization", "location", "date"):
        assert freq[common] >= 10, (common, freq[common])
    assert sum(1 for n in freq.values() if n <= 2) >= 20  # a long tail of rare types


def test_tokenizer_files_are_small():
    files = [p for p in (ASSETS / "tokenizer").iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"tokenizer.json", "tokenizer_config.json"}
    assert sum(p.stat().st_size for p in files) < 1_000_000


def test_tokenizer_specials(tokenizer):
    assert len(tokenizer) == 4096
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<pad>"]) == [0, 1, 2, 3]
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
            tokenizer.pad_token_id) == (0, 1, 2, 3)
    ids = tokenizer("x")["input_ids"]
    assert ids[0] == 1 and ids.count(1) == 1 and 2 not in ids
    assert tokenizer("x", add_special_tokens=False)["input_ids"] == ids[1:]
    ids = tokenizer("done</s>USER:", add_special_tokens=False)["input_ids"]
    assert ids.count(2) == 1
    assert tokenizer.decode(ids) == "done</s>USER:"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "doneUSER:"


@pytest.mark.parametrize("text", [
    "Zürich 東京 🙂 \t\n",
    "  leading and trailing spaces  ",
    "Ελληνικά, русский, العربية, हिन्दी, 한국어 — “quotes” ½ ∑ \u200b\u00a0",
    "\r\n\x00\x7f tabs\t\tand\nnewlines\n\n",
    'json: ["Ada Lovelace", "C++"] {"k": [1, 2.5e-3]} \\ / `code()` <tag>',
])
def test_tokenizer_round_trips_any_text(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert 0 not in ids  # byte-level: never unknown
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_tokenizer_segments_keep_their_leading_space(tokenizer):
    answer = tokenizer(' ["Ada"]', add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(answer)[0] == 'Ġ["'
    assert tokenizer.decode(answer) == ' ["Ada"]'
    question = "USER: What describes person in the text? ASSISTANT:"
    ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == question
    assert len(ids) <= 12  # the template is compact
    assert len(tokenizer(" []", add_special_tokens=False)["input_ids"]) == 1


def test_rendered_sample_tokenizes_compactly(tokenizer, passages):
    style = UniNER()
    lengths = []
    for text, answers in passages:
        qa = [(t, style.answer(a)) for t, a in answers.items()]
        rendered = style.render(style.segments(text, qa))
        ids = tokenizer(rendered)["input_ids"]
        assert tokenizer.decode(ids[1:]) == rendered
        assert ids.count(2) == len(qa) + 1  # one EOS per reply
        lengths.append(len(ids))
    assert max(lengths) <= 2048
    assert sum(lengths) / len(lengths) < 300


def test_tokenizer_build_reproduces_the_shipped_files(tmp_path):
    """`python -m uniner.assets.build_tokenizer` is deterministic and the shipped files are current
    (rebuild them after changing sample.json or the template)."""
    from uniner.assets import build_tokenizer

    build_tokenizer.main(["--out", str(tmp_path)])
    shipped = ASSETS / "tokenizer"
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).read_text() == (shipped / name).read_text()
    built, ours = (json.loads((d / "tokenizer.json").read_text()) for d in (tmp_path, shipped))
    assert built["model"]["vocab"] == ours["model"]["vocab"]
    assert built["model"]["merges"] == ours["model"]["merges"]
    assert built["added_tokens"] == ours["added_tokens"]
    assert built["post_processor"] == ours["post_processor"]
