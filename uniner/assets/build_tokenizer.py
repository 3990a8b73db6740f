"""Build the shipped tokenizer of the tiny random-init backbone: `uniner/assets/tokenizer/`.

    python -m uniner.assets.build_tokenizer [--out DIR]

A byte-level BPE (GPT-2 style: any text, in any script, encodes losslessly) of 4,096 entries,
trained with the `tokenizers` library on the embedded sample (`uniner/assets/sample.json`)
rendered with the UniversalNER conversation template, so that the template, the questions and
the JSON answers tokenize compactly. Special tokens: `<unk>` 0, `<s>` 1 (BOS, prepended by the
post-processor), `</s>` 2 (EOS, never added automatically; written as `</s>` in rendered text and
recognised there), `<pad>` 3. The build is deterministic: running it again reproduces the same
files byte for byte.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from uniner.data.prompts import UniNER

ASSETS = Path(__file__).resolve().parent
VOCAB_SIZE = 4096
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0, 1, 2, 3
MODEL_MAX_LENGTH = 2048  # the tiny backbone's max_position_embeddings

# The entity types the zero-shot benchmark asks about (the official label names of CrossNER,
# MIT Movie and MIT Restaurant), so that its questions tokenize compactly too.
BENCHMARK_TYPES = [
    "algorithm", "conference", "country", "field", "location", "metrics", "organization", "person",
    "product", "program language", "researcher", "task", "university", "award", "book", "event",
    "literary genre", "magazine", "poem", "writer", "album", "band", "music genre",
    "musical artist", "musical instrument", "song", "election", "political party", "politician",
    "academic journal", "astronomical object", "chemical compound", "chemical element",
    "discipline", "enzyme", "protein", "scientist", "theory", "actor", "average ratings",
    "character", "director", "genre", "plot", "rating", "review", "title", "trailer", "year",
    "Amenity", "Cuisine", "Dish", "Hours", "Location", "Price", "Rating", "Restaurant Name",
]

# Template pieces and JSON punctuation, so they become single tokens whatever the sample holds.
EXTRA_TEXT = [
    f"{UniNER.system} USER: Text: ASSISTANT: {UniNER.read_reply}",
    f"USER: {UniNER.question('X')} ASSISTANT:",
    *(f"USER: {UniNER.question(type_)} ASSISTANT:" for type_ in BENCHMARK_TYPES),
    ' ["", ""]',
    ' ["", "", ""]',
    " []",
    '["", ""]',
    "[]",
]
EXTRA_REPEAT = 64  # weight of the template pieces against the sample's text


def corpus(sample: Path) -> Iterator[str]:
    """The training text: every conversation of the sample as template segments, then the extras.

    Segments are yielded one by one, without the `</s>` between them (it is a special token).
    """
    prompt = UniNER()
    for item in json.loads(sample.read_text(encoding="utf-8")):
        turns = [t["value"] for t in item["conversations"]]
        text = turns[0].removeprefix("Text: ")
        qa = []
        for question, answer in zip(turns[2::2], turns[3::2]):
            type_ = question.removeprefix("What describes ").removesuffix(" in the text?")
            qa.append((type_, answer))
        for message in prompt.segments(text, qa):
            yield message.content
    for _ in range(EXTRA_REPEAT):
        yield from EXTRA_TEXT


def build(sample: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(sample), trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", bos)])
    return tokenizer


def save(tokenizer: Tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"), pretty=True)
    special_map = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "pad_token": "<pad>"}
    added = {
        str(tokenizer.token_to_id(tok)): {
            "content": tok, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}
        for tok in SPECIALS
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        **special_map,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
        "padding_side": "right",
    }
    for name, obj in [("tokenizer_config.json", config), ("special_tokens_map.json", special_map)]:
        (out / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=Path, default=ASSETS / "sample.json")
    parser.add_argument("--out", type=Path, default=ASSETS / "tokenizer")
    args = parser.parse_args(argv)
    tokenizer = build(args.sample)
    if tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise SystemExit(f"trained vocabulary has {tokenizer.get_vocab_size()} entries, "
                         f"not {VOCAB_SIZE}: the corpus is too small")
    save(tokenizer, args.out)
    print(f"wrote {args.out} ({tokenizer.get_vocab_size()} entries)")


if __name__ == "__main__":
    main()
