import json
from pathlib import Path

import pytest
from timing import cpu_seconds

from uniner.data.readers import (
    load_label_map,
    read_bio,
    read_instructuie,
    read_pile_ner,
    read_uniner_json,
    source_files,
)
from uniner.data.records import DataError, Mention, ReadReport
from uniner.data.spans import first_occurrence, occurrences

# The official label names of CrossNER AI (README "Label names of the official zero-shot protocol")
CROSSNER_AI = {"algorithm": "algorithm", "conference": "conference", "country": "country",
               "field": "field", "location": "location", "metrics": "metrics", "misc": None,
               "organisation": "organization", "person": "person", "product": "product",
               "programlang": "program language", "researcher": "researcher", "task": "task",
               "university": "university"}


def spans_exact(passages):
    return all(m.start is not None and p.text[m.start:m.end] == m.text
               for p in passages for m in p.mentions)


def tagged(passages):
    return [[(m.text, m.type) for m in p.mentions] for p in passages]


def write(tmp_path, text, name="t.txt", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# --- real data -------------------------------------------------------------------------------

@pytest.mark.parametrize("rel, sentences, entities", [
    ("crossner/ai/test.txt", 431, 1809),
    ("crossner/literature/test.txt", 416, 2266),
    ("crossner/music/test.txt", 465, 3336),
    ("crossner/politics/test.txt", 651, 4209),
    ("crossner/science/test.txt", 543, 3089),
    ("mit_movie/engtest.bio", 2443, 5339),  # label first, no trailing blank line
    ("mit_restaurant/restauranttest.bio", 1521, 3151),
    ("wnut17/emerging.test.annotated", 1287, 1079),
])
def test_real_bio_counts(data_root, rel, sentences, entities):
    report = ReadReport(rel)
    passages = read_bio(data_root / rel, report=report)
    assert (len(passages), sum(len(p.mentions) for p in passages)) == (sentences, entities)
    assert (report.passages, report.mentions, report.skipped_rows) == (sentences, entities, 0)
    assert spans_exact(passages)
    assert all(p.text for p in passages)
    assert passages[0].id == f"{(data_root / rel).stem}_0"


def test_real_mit_layout_is_label_first(data_root):
    passages = read_bio(data_root / "mit_movie/engtest.bio")
    types = {m.type for p in passages for m in p.mentions}
    assert len(types) == 12 and "RATINGS_AVERAGE" in types
    assert passages[0].text.startswith("are there any good romantic comedies")
    explicit = read_bio(data_root / "mit_movie/engtest.bio", layout="tag_token")
    assert tagged(explicit) == tagged(passages)


def test_real_pile_ner_bio(data_root):
    report = ReadReport("pile")
    passages, seconds = cpu_seconds(
        lambda: read_bio(data_root / "pile_ner_bio/passages.txt", report=report))
    assert seconds < 2.0  # CPU seconds (0.4 here): the wall clock depends on the load
    assert len(passages) == 2217 and report.mentions == 30978
    assert report.notes == {"I- tag opens an entity": 156}
    assert spans_exact(passages)
    types = {m.type for p in passages for m in p.mentions}
    assert len(types) == 368 and "field of study" in types  # labels with spaces survive


def test_real_wnut_train_tab_only_lines_split_sentences(data_root):
    # wnut17train.conll separates many sentences by a line holding only a tab
    passages = read_bio(data_root / "wnut17/wnut17train.conll")
    assert len(passages) == 3394
    assert spans_exact(passages)


def test_real_instructuie_crossner_ai(data_root):
    report = ReadReport("iuie")
    passages = read_instructuie(data_root / "instructuie/CrossNER_AI", split="test",
                                report=report)
    assert len(passages) == 431 and report.mentions == 1804 and not report.notes
    assert spans_exact(passages)
    labels = json.loads((data_root / "instructuie/CrossNER_AI/labels.json").read_text())
    label_map = {t: (None if t == "else" else t) for t in labels}
    dropped = ReadReport("iuie")
    mapped = read_instructuie(data_root / "instructuie/CrossNER_AI", label_map=label_map,
                              report=dropped)
    assert dropped.dropped_mentions > 0
    assert dropped.mentions + dropped.dropped_mentions == 1804
    assert "else" not in {m.type for p in mapped for m in p.mentions}


def test_real_uniner_json(data_root):
    queries = read_uniner_json(data_root / "uniner_json/CrossNER_AI.json")
    assert len(queries) == 5603
    assert len({q["type"] for q in queries}) == 13
    # 431 sentences x 13 types, in consecutive groups; one sentence occurs twice in the source,
    # so there are 430 distinct texts
    groups = [queries[i:i + 13] for i in range(0, len(queries), 13)]
    assert len(groups) == 431 and all(len({q["text"] for q in g}) == 1 for g in groups)
    assert len({q["text"] for q in queries}) == 430
    assert all(isinstance(q["gold"], list) for q in queries)
    assert queries[0]["id"] == "CrossNER_AI_0"


def test_crossner_ai_matches_the_official_file_but_its_sentence_final_slips(data_root):
    path = data_root / "crossner/ai/test.txt"
    raw = {line.split("\t")[1][2:] for line in path.read_text().splitlines() if "\t" in line}
    assert raw - {""} == set(CROSSNER_AI)  # the map covers exactly the file's raw types
    report = ReadReport("ai")
    passages = read_bio(path, label_map=CROSSNER_AI, report=report)
    assert report.dropped_mentions > 0  # misc
    official = read_uniner_json(data_root / "uniner_json/CrossNER_AI.json")
    types = [t for t in CROSSNER_AI.values() if t]
    groups = [official[i:i + 13] for i in range(0, len(official), 13)]
    # this file ends with a blank line, so the official conversion kept all its sentences
    assert [g[0]["text"] for g in groups] == [p.text for p in passages]
    slips = []
    for p, group in zip(passages, groups):
        assert sorted(q["type"] for q in group) == sorted(types)
        for q in group:
            # the official gold keeps repeated mentions; compare in order, duplicates included
            ours = [m.text for m in p.mentions if m.type == q["type"]]
            if ours != q["gold"]:
                slips.append((q["gold"], ours, p.text))
            else:
                assert list(dict.fromkeys(q["gold"])) == p.answer(q["type"])
    assert len(slips) == 4 and sorted(ours[-1] for _, ours, _ in slips) == [
        "Confusion matrix", "Kismet", "PSOLA", "hinge loss"]
    for gold, ours, text in slips:  # each slip: the official gold lost a sentence-final entity
        assert ours[:-1] == gold and text.endswith(" " + ours[-1])


# --- synthetic BIO ---------------------------------------------------------------------------

def test_iob1(tmp_path):
    path = write(tmp_path, "Ann\tI-PER\nLee\tI-PER\nBob\tB-PER\nin\tO\nParis\tI-LOC\n")
    report = ReadReport("t")
    [p] = read_bio(path, scheme="iob1", report=report)
    assert tagged([p]) == [[("Ann Lee", "PER"), ("Bob", "PER"), ("Paris", "LOC")]]
    assert not report.notes  # an opening I- is normal in IOB1
    assert tagged(read_bio(path)) == tagged([p])  # the conlleval reading agrees


@pytest.mark.parametrize("tags", [["B-PER", "I-PER", "E-PER", "O", "S-LOC", "B-ORG", "E-ORG"],
                                  ["B-PER", "I-PER", "L-PER", "O", "U-LOC", "B-ORG", "L-ORG"]])
def test_bioes_and_bilou(tmp_path, tags):
    words = ["Ada", "King", "Lovelace", "in", "London", "Royal", "Society"]
    path = write(tmp_path, "".join(f"{w}\t{t}\n" for w, t in zip(words, tags)))
    [p] = read_bio(path)
    assert tagged([p]) == [[("Ada King Lovelace", "PER"), ("London", "LOC"),
                            ("Royal Society", "ORG")]]
    assert spans_exact([p])
    assert tagged(read_bio(path, scheme="bioes")) == tagged([p])
    with pytest.raises(DataError, match=r"t\.txt:3: unknown tag prefix"):
        read_bio(path, scheme="bio")


def test_bioes_adjacent_singletons(tmp_path):
    path = write(tmp_path, "A\tS-X\nB\tS-X\nC\tB-Y\nD\tE-Y\nE\tB-Y\nF\tE-Y\n")
    [p] = read_bio(path)
    assert tagged([p]) == [[("A", "X"), ("B", "X"), ("C D", "Y"), ("E F", "Y")]]


def test_crlf_bom_docstart_blank_runs_and_no_trailing_newline(tmp_path):
    text = ("-DOCSTART-\tO\r\n\r\nJohn\tB-PER\r\nruns\tO\r\n\r\n\r\n\r\n"
            "-DOCSTART-\tO\r\nin\tO\r\nRome\tB-LOC")
    path = write(tmp_path, "\ufeff" + text)
    passages = read_bio(path)
    assert [p.text for p in passages] == ["John runs", "in Rome"]
    assert tagged(passages) == [[("John", "PER")], [("Rome", "LOC")]]
    assert [p.id for p in passages] == ["t_0", "t_1"]


def test_space_separated(tmp_path):
    path = write(tmp_path, "New  B-LOC\nYork I-LOC\nis   O\nbig  O\n\nHi O\n")
    passages = read_bio(path)
    assert tagged(passages) == [[("New York", "LOC")], []]
    assert passages[0].text == "New York is big"


def test_label_first_layout_with_spaces_in_labels(tmp_path):
    rows = [("O", "I"), ("O", "like"), ("B-programming language", "Python"), ("O", "and"),
            ("B-programming language", "Common"), ("I-programming language", "Lisp")]
    path = write(tmp_path, "".join(f"{t}\t{w}\n" for t, w in rows))
    [p] = read_bio(path)
    assert tagged([p]) == [[("Python", "programming language"),
                            ("Common Lisp", "programming language")]]  # sentence-final kept
    assert p.text[p.mentions[1].start:] == "Common Lisp"
    with pytest.raises(DataError, match="unknown tag prefix"):
        read_bio(path, layout="token_tag")


def test_token_first_labels_with_spaces(tmp_path):
    path = write(tmp_path, "Rust\tB-programming language\nrocks\tO\n")
    [p] = read_bio(path)
    assert p.mentions == [Mention("Rust", "programming language", 0, 4)]


def test_stray_and_type_switching_i_tags_open_entities(tmp_path):
    tags = [("the", "O"), ("Big", "I-ORG"), ("Corp", "I-ORG"), ("Paris", "B-LOC"),
            ("Hilton", "I-ORG"), ("Hotel", "I-ORG"), ("said", "O"), ("Bo", "I-PER")]
    path = write(tmp_path, "".join(f"{w}\t{t}\n" for w, t in tags))
    report = ReadReport("t")
    [p] = read_bio(path, report=report)
    assert tagged([p]) == [[("Big Corp", "ORG"), ("Paris", "LOC"), ("Hilton Hotel", "ORG"),
                            ("Bo", "PER")]]
    assert report.notes == {"I- tag opens an entity": 3}
    assert spans_exact([p])


def test_sentence_final_entity_is_kept(tmp_path):
    path = write(tmp_path, "we\tO\nuse\tO\nhinge\tB-metrics\nloss\tI-metrics\n\nok\tO\n")
    passages = read_bio(path)
    assert tagged(passages) == [[("hinge loss", "metrics")], []]
    assert passages[0].mentions[0].end == len(passages[0].text)


def test_file_without_trailing_newline_keeps_last_sentence(tmp_path):
    path = write(tmp_path, "a\tO\n\nKismet\tB-product")
    passages = read_bio(path)
    assert [p.text for p in passages] == ["a", "Kismet"]
    assert passages[1].mentions == [Mention("Kismet", "product", 0, 6)]


@pytest.mark.parametrize("bad_line, kind", [("x\tO\tO", "wrong number of columns"),
                                            ("lonely", "wrong number of columns"),
                                            ("x\tX-PER", "unknown tag prefix"),
                                            ("x\tB-", "unknown tag prefix"),
                                            ("x\tB_PER", "unknown tag prefix"),
                                            ("\tB-PER", "empty token")])
def test_bad_lines_name_file_and_line(tmp_path, bad_line, kind):
    path = write(tmp_path, f"a\tO\nb\tB-PER\n\nc\tO\n{bad_line}\nd\tO\n\ne\tB-LOC\n")
    with pytest.raises(DataError, match=kind) as err:
        read_bio(path)
    assert err.value.line == 5 and f"{path}:5: " in str(err.value)
    report = ReadReport("t")
    passages = read_bio(path, on_error="skip", report=report)
    assert [p.id for p in passages] == ["t_0", "t_2"]  # ids keep the sentence's file index
    assert (report.passages, report.mentions, report.skipped_rows) == (2, 2, 1)
    assert report.notes == {kind: 1}


def test_label_map_missing_type_names_tag_and_line(tmp_path):
    path = write(tmp_path, "a\tB-PER\n\nb\tO\nc\tB-ORG\nd\tI-ORG\n")
    with pytest.raises(DataError, match=r"t\.txt:4: .*'ORG'.*'B-ORG'") as err:
        read_bio(path, label_map={"PER": "person"})
    assert err.value.line == 4
    report = ReadReport("t")
    passages = read_bio(path, label_map={"PER": "person"}, on_error="skip", report=report)
    assert tagged(passages) == [[("a", "person")]]
    assert report.skipped_rows == 1 and report.notes == {"type not in label map": 1}


def test_label_map_drops_misc_and_counts(tmp_path):
    path = write(tmp_path, "Ada\tB-person\nspoke\tO\nEnglish\tB-misc\nand\tO\nFrench\tB-misc\n")
    report = ReadReport("t")
    [p] = read_bio(path, label_map={"person": "person", "misc": None}, report=report)
    assert tagged([p]) == [[("Ada", "person")]]
    assert (report.mentions, report.dropped_mentions) == (1, 2)


def test_bio_rejects_bad_options_and_reads_empty_files(tmp_path):
    path = write(tmp_path, "\n\n")
    assert read_bio(path) == []
    with pytest.raises(ValueError, match="layout"):
        read_bio(path, layout="columns")
    with pytest.raises(ValueError, match="on_error"):
        read_bio(path, on_error="ignore")
    with pytest.raises(DataError, match="cannot tell the tag column"):
        read_bio(write(tmp_path, "a\tb\nc\td\n"))


def test_load_label_map(tmp_path):
    yml = write(tmp_path, "organisation: organization\nmisc: null\n'ON': 'on'\n", "m.yaml")
    assert load_label_map(yml) == {"organisation": "organization", "misc": None, "ON": "on"}
    js = write(tmp_path, json.dumps({"misc": None, "per": "person"}), "m.json")
    assert load_label_map(js) == {"misc": None, "per": "person"}
    assert load_label_map({"a": "b"}) == {"a": "b"}
    with pytest.raises(DataError, match="quote it"):
        load_label_map(write(tmp_path, "ON: on\n", "bool.yaml"))  # YAML 1.1 reads ON as True
    with pytest.raises(DataError, match="must be a type name or null"):
        load_label_map({"a": 3})
    path = write(tmp_path, "Ada\tB-per\n")
    assert tagged(read_bio(path, label_map=js)) == [[("Ada", "person")]]


# --- Pile-NER-type conversations -------------------------------------------------------------

def item(pid, text, *qa, read=True):
    turns = [{"from": "human", "value": f"Text: {text}"}]
    if read:
        turns.append({"from": "gpt", "value": "I've read this text."})
    for q, a in qa:
        turns += [{"from": "human", "value": f"What describes {q} in the text?"},
                  {"from": "gpt", "value": a}]
    return {"id": pid, "conversations": turns}


PILE = [
    item("ner_1", "Ada Lovelace met Charles Babbage in London.",
         ("person", '["Ada Lovelace", "Charles Babbage"]'), ("award", "[]"),
         ("location", "['London']"), ("person", '["Ada Lovelace"]'), ("award", "[]")),
    item("ner_2", "Rust and Go are languages.", ("programming language", '["Rust", "Go", 7]'),
         ("city", "[]"), ("organization", '["Mozilla"]')),
    {"id": "ner_3", "conversations": []},
    item("ner_4", "Plain text.", ("person", "not a list")),
    item("ner_5", "Kyoto is old.", ("city", '["Kyoto"]'), read=False),
]


def test_pile_ner_json(tmp_path):
    path = write(tmp_path, json.dumps(PILE), "pile.json")
    with pytest.raises(DataError, match=r"pile\.json: malformed item: item 3 \(id 'ner_3'\)"):
        read_pile_ner(path)
    report = ReadReport("pile")
    passages = read_pile_ner(path, on_error="skip", report=report)
    assert [p.id for p in passages] == ["ner_1", "ner_2", "ner_5"]
    a, b, c = passages
    assert a.text == "Ada Lovelace met Charles Babbage in London."
    assert a.mentions == [Mention("Ada Lovelace", "person", 0, 12),
                          Mention("Charles Babbage", "person", 17, 32),
                          Mention("London", "location", 36, 42)]
    assert a.negatives == ["award"]
    assert [m.text for m in b.mentions] == ["Rust", "Go", "Mozilla"]
    assert (b.mentions[2].start, b.mentions[2].end) == (None, None)
    assert b.negatives == ["city"]
    assert c.mentions == [Mention("Kyoto", "city", 0, 5)]
    assert (report.passages, report.mentions, report.skipped_rows) == (3, 7, 2)
    assert report.notes == {"duplicate type question merged": 2, "ungrounded mention": 1,
                            "non-string or empty answer item": 1, "malformed item": 1,
                            "bad answer": 1}


def test_pile_ner_jsonl_names_the_line(tmp_path):
    good = json.dumps(PILE[0])
    bad = json.dumps(item("x", "Some text.", ("person", "[")))
    path = write(tmp_path, f"{good}\n\n{bad}\n", "pile.jsonl")
    with pytest.raises(DataError, match=r"pile\.jsonl:3: bad answer: item 2 \(id 'x'\)"):
        read_pile_ner(path)
    report = ReadReport("t")
    passages = read_pile_ner(write(tmp_path, f"{good}\n{{not json\n", "b.jsonl"),
                             on_error="skip", report=report)
    assert len(passages) == report.skipped_rows == report.notes["bad JSON"] == 1
    bad_q = write(tmp_path, json.dumps([{"conversations": [
        {"from": "human", "value": "Text: t"}, {"from": "gpt", "value": "ok"},
        {"from": "human", "value": "Who is here?"}, {"from": "gpt", "value": "[]"}]}]), "q.json")
    with pytest.raises(DataError, match="bad question: item 1: 'Who is here"):
        read_pile_ner(bad_q)


def test_pile_ner_round_trips_the_embedded_sample():
    from pathlib import Path

    from uniner.assets import __file__ as assets_init

    passages = read_pile_ner(Path(assets_init).parent / "sample.json")
    assert len(passages) == 48 and all(p.text and p.mentions for p in passages)


def test_pile_ner_hub_id_goes_through_datasets(tmp_path, monkeypatch):
    import datasets

    files = write(tmp_path, json.dumps(PILE[:2]), "hub.json")
    real = datasets.load_dataset
    calls = []

    def from_hub(source, split):
        calls.append((source, split))
        if source != "Universal-NER/Pile-NER-type":
            raise ConnectionError("offline")
        return real("json", data_files=str(files), split="train", cache_dir=str(tmp_path / "c"))

    monkeypatch.setattr(datasets, "load_dataset", from_hub)
    passages = read_pile_ner("Universal-NER/Pile-NER-type", split="train")
    assert calls == [("Universal-NER/Pile-NER-type", "train")]
    assert [p.id for p in passages] == ["ner_1", "ner_2"] and passages[0].negatives == ["award"]
    with pytest.raises(DataError, match="not an existing file, and loading it as a hub dataset"):
        read_pile_ner("nobody/nothing")
    with pytest.raises(FileNotFoundError):
        read_pile_ner(tmp_path / "missing.json")


# --- the one string-to-span matcher -----------------------------------------------------------

def test_occurrences_preference_order():
    assert occurrences("Yorkshire and York, york", "York") == [(14, 18)]  # whole word first
    assert occurrences("Yorkshire and york", "York") == [(14, 18)]  # then ignoring case
    assert occurrences("Yorkshire", "York") == [(0, 4)]  # then anywhere
    assert occurrences("YORKSHIRE", "York") == [(0, 4)]
    assert occurrences("New\nYork and New  York", " New York ") == [(0, 8), (13, 22)]
    assert occurrences("aaaa", "aa") == [(0, 2), (2, 4)] and occurrences("C++ x", "C++") == [(0, 3)]
    assert occurrences("x", " ") == [] and occurrences("x", "y") == []
    # verbatim: exact case and white space only, so that text[start:end] == item
    assert occurrences("New\nYork, new york", "New York", loose=False) == []
    assert occurrences("Yorkshire, York", "York", loose=False) == [(11, 15)]
    assert first_occurrence("Bob, Bobby and Bob", "Bob", near=12) == (15, 18)
    assert first_occurrence("Bob, Bobby and Bob", "Bob") == (0, 3)
    assert first_occurrence("Bobby", "bob", loose=False) is None


def test_readers_ground_on_whole_words(tmp_path):
    pile = write(tmp_path, json.dumps([item("p", "Yorkshire is near York.",
                                            ("location", '["York", "york"]'))]), "p.json")
    [p] = read_pile_ner(pile)
    assert p.mentions == [Mention("York", "location", 18, 22), Mention("york", "location")]
    (tmp_path / "test.json").write_text(json.dumps([{"sentence": "Yorkshire and York", "entities": [
        {"name": "York", "type": "location", "pos": [1, 5]}]}]))
    [p] = read_instructuie(tmp_path)
    assert p.mentions == [Mention("York", "location", 14, 18)]


# --- InstructUIE and official evaluation files, synthetic ------------------------------------

def test_source_files_are_the_files_the_readers_read(tmp_path):
    """What uniner-train checks before loading a model is what the reader then opens."""
    (tmp_path / "test.json").write_text(json.dumps([{"sentence": "Ada .", "entities": []}]))
    assert source_files({"format": "instructuie", "path": str(tmp_path)}) == \
        [(tmp_path / "test.json", False)]  # the reader's own default split
    assert len(read_instructuie(tmp_path)) == 1
    assert source_files({"format": "instructuie", "path": str(tmp_path), "split": "dev"}) == \
        [(tmp_path / "dev.json", False)]
    local = tmp_path / "pile.json"
    hub = "Universal-NER/Pile-NER-type"
    assert source_files({"format": "pile_ner", "path": [str(local), hub]}) == \
        [(local, False), (Path(hub), True)]
    with pytest.raises(FileNotFoundError, match="pile.json: no such file"):
        read_pile_ner(local)  # named as a local file: never looked up on the hub


def test_instructuie_repairs_and_errors(tmp_path):
    items = [{"sentence": "Ada met Bob and Bob .", "entities": [
                {"name": "Ada", "type": "person", "pos": [0, 3]},
                {"name": "Bob", "type": "person", "pos": [15, 18]},  # off by one: repaired
                {"name": "and", "type": "else", "pos": [12, 15]}]},
             {"sentence": "Nothing here .", "entities": [
                 {"name": "Zed", "type": "person", "pos": [0, 3]}]},
             {"sentence": "", "entities": []}]
    (tmp_path / "dev.json").write_text(json.dumps(items))
    with pytest.raises(DataError, match=r"dev\.json: entity not in sentence: item 2: 'Zed'"):
        read_instructuie(tmp_path, split="dev")
    report = ReadReport("t")
    passages = read_instructuie(tmp_path, split="dev", label_map={"person": "person",
                                                                  "else": None},
                                on_error="skip", report=report)
    [p] = passages
    assert p.id == "dev_0" and spans_exact(passages)
    assert [(m.text, m.start) for m in p.mentions] == [("Ada", 0), ("Bob", 16)]
    assert (report.mentions, report.dropped_mentions, report.skipped_rows) == (2, 1, 2)
    assert report.notes == {"entity span repaired": 1, "entity not in sentence": 1,
                            "empty text": 1}


def test_uniner_json_errors(tmp_path):
    good = item("q0", "Ada spoke .", ("person", '["Ada"]'))
    bad = item("q1", "Bob spoke .", ("person", "[oops"))
    path = write(tmp_path, json.dumps([good, bad]), "eval.json")
    with pytest.raises(DataError, match=r"eval\.json: bad answer: item 2 \(id 'q1'\)"):
        read_uniner_json(path)
    report = ReadReport("t")
    assert read_uniner_json(path, on_error="skip", report=report) == [
        {"id": "q0", "text": "Ada spoke .", "type": "person", "gold": ["Ada"]}]
    assert report.skipped_rows == 1 and report.notes == {"bad answer": 1}
    with pytest.raises(DataError, match="expected a JSON list"):
        read_uniner_json(write(tmp_path, "{}", "obj.json"))
