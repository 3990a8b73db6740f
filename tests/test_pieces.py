"""Passages cut into pieces of whole sentences (`pieces: {max_words}`, issue 16)."""

import pytest

from uniner.data.pieces import cut_passage, cut_passages
from uniner.data.records import Mention, Passage, ReadReport
from uniner.data.sources import load_passages
from uniner.errors import ConfigError

TEXT = ("Ada Lovelace wrote notes. They described an engine. Charles Babbage built it in London. "
        "Nobody else cared.")


def spanned(text: str, *pairs: tuple[str, str]) -> list[Mention]:
    return [Mention(s, t, text.index(s), text.index(s) + len(s)) for s, t in pairs]


def test_pieces_are_runs_of_whole_sentences_with_their_mentions():
    p = Passage("p1", TEXT, spanned(TEXT, ("Ada Lovelace", "person"),
                                    ("Charles Babbage", "person"), ("London", "city")),
                negatives=["disease"])
    pieces = cut_passage(p, max_words=9)
    assert [x.text for x in pieces] == ["Ada Lovelace wrote notes. They described an engine.",
                                        "Charles Babbage built it in London. Nobody else cared."]
    assert [x.id for x in pieces] == ["p1#0", "p1#1"]
    assert [(m.text, m.type) for m in pieces[1].mentions] == [("Charles Babbage", "person"),
                                                              ("London", "city")]
    for piece in pieces:
        assert all(piece.text[m.start:m.end] == m.text for m in piece.mentions)
        assert piece.negatives == ["disease"]  # absent from the passage, so from each piece
    assert cut_passage(p, max_words=100)[0].text == TEXT


def test_a_sentence_end_inside_a_mention_is_no_cut():
    text = "She joined Yahoo! Japan last year. It grew."
    p = Passage("p", text, spanned(text, ("Yahoo! Japan", "company")))
    pieces = cut_passage(p, max_words=3)
    assert [x.text for x in pieces] == ["She joined Yahoo! Japan last year.", "It grew."]
    assert pieces[0].mentions[0].text == "Yahoo! Japan"


def test_mentions_without_offsets_go_where_their_string_occurs():
    p = Passage("p", TEXT, [Mention("London", "city"), Mention("Ada Lovelace", "person")])
    pieces = cut_passage(p, max_words=8)
    assert [m.text for m in pieces[0].mentions] == ["Ada Lovelace"]
    assert [m.text for m in pieces[1].mentions] == ["London"]
    assert pieces[1].mentions[0].start is None  # the source had none: none invented


def test_pieces_without_a_mention_are_dropped_and_counted():
    p = Passage("p", TEXT, spanned(TEXT, ("London", "city")))
    report = ReadReport("test")
    kept = cut_passages([p], {"max_words": 6}, report)
    assert [x.text for x in kept] == ["Charles Babbage built it in London."]
    assert report.notes["pieces without a mention (dropped)"] == 3
    assert len(cut_passages([p], {"max_words": 6, "keep_empty": True})) == 4


def test_a_sentence_longer_than_max_words_is_cut_between_words_not_in_a_mention():
    text = "alpha beta New York gamma delta epsilon zeta eta theta"
    p = Passage("p", text, spanned(text, ("New York", "city")))
    pieces = cut_passage(p, max_words=3)
    assert [x.text for x in pieces] == ["alpha beta New York", "gamma delta epsilon",
                                        "zeta eta theta"]
    assert pieces[0].mentions[0].text == "New York"


@pytest.mark.parametrize("pieces, match", [({"max_word": 5}, "unknown keys"),
                                           ({"max_words": 0}, "must be >= 1")])
def test_bad_pieces_keys_are_config_errors(pieces, match):
    with pytest.raises(ConfigError, match=match):
        cut_passages([], pieces)


def test_the_held_out_split_is_of_whole_passages(tmp_path):
    """`holdout` picks passages; `pieces` cuts each part after: no passage feeds both parts."""
    path = tmp_path / "p.txt"
    blocks = []
    for i in range(20):
        blocks.append(f"Alice{i}\tB-person\nmet\tO\nBob\tB-person\n.\tO\nThen\tO\nCarol{i}\t"
                      "B-person\nleft\tO\n.\tO")
    path.write_text("\n\n".join(blocks) + "\n")
    source = {"format": "bio", "path": str(path), "holdout": {"fraction": 0.25, "seed": 0}}
    whole = {part: load_passages({**source, "part": part}) for part in ("train", "heldout")}
    cut = {part: load_passages({**source, "part": part, "pieces": {"max_words": 4}})
           for part in ("train", "heldout")}
    for part in ("train", "heldout"):
        assert len(cut[part]) == 2 * len(whole[part])
        assert {x.id.rsplit("#", 1)[0] for x in cut[part]} == {x.id for x in whole[part]}
    second = cut["train"][1]
    assert second.text.startswith("Then Carol") and [m.type for m in second.mentions] == ["person"]
    assert second.text[second.mentions[0].start:second.mentions[0].end].startswith("Carol")
