import json
import random
import re
import string
from collections import Counter

import pytest
from timing import cpu_seconds

from uniner.evaluation.metric import (
    QueryScore,
    SpanQuery,
    ground,
    ground_spans,
    is_malformed,
    normalize_answer,
    parse_answer,
    parse_mentions,
    score_by,
    score_queries,
    strict_scores,
)
from uniner.evaluation.scoring import benchmark_average
from uniner.evaluation.tagging import bio_tags, seqeval_scores, tag_spans

# --------------------------------------------------------------------------- reference oracle
# The official universal-ner src/eval/utils.py semantics, written out independently of
# uniner.evaluation.metric (nothing below is imported from it).


def ref_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def ref_parser(text):
    try:
        match = re.match(r"\[(.*?)\]", text)
        text = match.group() if match else "[]"
        items = json.loads(text)
        formatted = []
        for item in items:
            if isinstance(item, (list, tuple)):
                item = tuple([ref_normalize(e) for e in item])
            else:
                item = ref_normalize(item)
            if item not in formatted:
                formatted.append(item)
        return formatted
    except Exception:
        return []


def ref_evaluate(preds, golds):
    n_correct = n_gold = n_pred = 0
    for pred, gold in zip(preds, golds):
        g, p = ref_parser(gold), ref_parser(pred)
        n_correct += sum(1 for t in p if t in g)
        n_gold += len(g)
        n_pred += len(p)
    prec = n_correct / (n_pred + 1e-10)
    rec = n_correct / (n_gold + 1e-10)
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec + 1e-10)}


def ref_malformed(text):
    match = re.match(r"\[(.*?)\]", text)
    if not match:
        return text.strip() != ""
    try:
        items = json.loads(match.group())
    except ValueError:
        return True
    return not all(isinstance(i, str) for i in items)


# --------------------------------------------------------------------------- perturbations

POOL = [
    "Ada Lovelace", "Charles Babbage", "The Beatles", "New York", "York", "U.S.", "IBM",
    "support vector machine", "an apple", "A Tribe Called Quest", "the", "São Paulo", "Zürich",
    "東京", "naïve Bayes", "C++", "AT&T", "Rock 'n' roll", "e-mail", "ÉCOLE", "Ω-3", "it's",
    "deep  learning", "k-means", "Dr. Who", "\"quoted\"", "back\\slash", "Σίσυφος",
]


def _recase(s, rng):
    return rng.choice([s.lower(), s.upper(), s.title(), s.swapcase()])


def _punctuate(s, rng):
    return rng.choice([s + "!", s + ".", "(" + s + ")", s.replace(" ", "-"), "'" + s + "'",
                       s + " ,", "«" + s + "»"])


def _article(s, rng):
    return rng.choice(["The ", "the ", "A ", "an ", "THE "]) + s


KINDS = ["drop", "add", "recase", "punct", "article", "dup", "trailing", "bracket_in_item",
         "nested", "truncated", "empty", "leading_ws", "numbers", "unicode", "newline", "null",
         "object", "single_quotes", "prose", "same", "reorder", "ascii_escape"]


def perturb(gold_items, rng):
    """A prediction made from a gold list by one or two perturbations; returns (text, kinds)."""
    items = list(gold_items)
    kinds = rng.sample(KINDS, rng.choice([1, 1, 2]))
    suffix = prefix = ""
    raw = None
    for kind in kinds:
        if kind == "drop" and items:
            items.pop(rng.randrange(len(items)))
        elif kind == "add":
            items.insert(rng.randrange(len(items) + 1), rng.choice(POOL))
        elif kind == "recase" and items:
            i = rng.randrange(len(items))
            items[i] = _recase(items[i], rng)
        elif kind == "punct" and items:
            i = rng.randrange(len(items))
            items[i] = _punctuate(items[i], rng)
        elif kind == "article" and items:
            i = rng.randrange(len(items))
            items[i] = _article(items[i], rng)
        elif kind == "dup" and items:
            items.append(rng.choice(items))
        elif kind == "trailing":
            suffix = rng.choice([" and more", "] extra", "\n[\"x\"]", " [\"y\"]", "</s>"])
        elif kind == "bracket_in_item":
            items.insert(0, rng.choice(["a]b", "[x]", "]"]))
        elif kind == "nested":
            raw = json.dumps([items[:2], *items[2:]]) if items else '[["a","b"]]'
        elif kind == "truncated":
            full = json.dumps(items + ["tail item"])
            raw = full[: rng.randrange(1, len(full) - 1)]
        elif kind == "empty":
            raw = rng.choice(["", " ", "\n"])
        elif kind == "leading_ws":
            prefix = rng.choice([" ", "\n", "Answer: ", "\t"])
        elif kind == "numbers":
            raw = rng.choice(["[1, 2]", "[1.5]", json.dumps(items + [3]), "[true]", "[NaN]"])
        elif kind == "unicode":
            items.append(rng.choice(["東京", "Zürich", "São Paulo", "Σίσυφος", "ÉCOLE"]))
        elif kind == "newline":
            raw = "[" + ",\n".join(json.dumps(x) for x in items) + "]" if items else "[\n]"
        elif kind == "null":
            raw = json.dumps(items + [None])
        elif kind == "object":
            raw = json.dumps([{"name": x} for x in items] or [{}])
        elif kind == "single_quotes":
            raw = repr(items)
        elif kind == "prose":
            raw = rng.choice(["There are no entities.", "None", "N/A", "[]", "[ ]"])
        elif kind == "reorder":
            rng.shuffle(items)
        elif kind == "ascii_escape":
            raw = json.dumps(items, ensure_ascii=False)
    if raw is None:
        raw = json.dumps(items, ensure_ascii=rng.random() < 0.5)
    return prefix + raw + suffix, kinds


def make_query_set(rng):
    preds, golds, seen = [], [], Counter()
    for _ in range(rng.randint(1, 25)):
        gold_items = list(dict.fromkeys(rng.sample(POOL, rng.choice([0, 0, 1, 2, 3, 5]))))
        gold = json.dumps(gold_items, ensure_ascii=rng.random() < 0.5)
        if rng.random() < 0.05:  # gold answers go through the same parser, quirks included
            gold, _ = perturb(gold_items, rng)
        pred, kinds = perturb(gold_items, rng)
        seen.update(kinds)
        preds.append(pred)
        golds.append(gold)
    return preds, golds, seen


# --------------------------------------------------------------------------- (a) official


def test_matches_reference_on_perturbed_query_sets():
    rng = random.Random(1234)
    kinds = Counter()
    checked = nonzero = malformed = 0
    for _ in range(600):
        preds, golds, seen = make_query_set(rng)
        kinds += seen
        ref = ref_evaluate(preds, golds)
        got = score_queries(preds, golds)
        for key in ("precision", "recall", "f1"):
            assert abs(got[key] - ref[key]) <= 1e-12, (key, preds, golds)
        assert got["n_pred"] == sum(len(ref_parser(p)) for p in preds)
        assert got["n_gold"] == sum(len(ref_parser(g)) for g in golds)
        assert got["malformed"] == sum(ref_malformed(p) for p in preds)
        for text in preds + golds:
            assert parse_answer(text) == ref_parser(text), text
            assert is_malformed(text) == ref_malformed(text), text
        checked += 1
        nonzero += 0 < ref["f1"] < 0.99
        malformed += got["malformed"]
    assert checked >= 500
    assert set(kinds) == set(KINDS)  # every perturbation was exercised
    assert nonzero > 200 and malformed > 200  # the sets are neither trivial nor all broken


@pytest.mark.parametrize("text,expected,bad", [
    ('["x"] and more', ["x"], False),
    ('["a]b", "c"]', [], True),  # the match ends at the first `]`
    ('[["a","b"]]', [], True),  # so a nested list never survives the match
    ('["a", "b', [], True),
    ("", [], False),
    (" ", [], False),
    (' ["a"]', [], True),  # no match at the start
    ("[1, 2]", [], True),
    ('["x", null]', [], True),
    ('["a",\n"b"]', [], True),  # `.` does not cross a newline
    ("['a']", [], True),
    ("[]", [], False),
    ("[ ]", [], False),
    ('["The Beatles", "the beatles!", "BEATLES"]', ["beatles"], False),
    ('["Zürich", "ZÜRICH"]', ["zürich"], False),
    ('["U.S.", "a.n"]', ["us", ""], False),  # punctuation goes first: "a.n" -> "an" -> ""
    ('["an apple", "A"]', ["apple", ""], False),
])
def test_parser_quirks(text, expected, bad):
    assert parse_answer(text) == expected == ref_parser(text)
    assert is_malformed(text) is bad


def test_normalize_answer():
    assert normalize_answer("The  Beatles!") == "beatles"
    assert normalize_answer("Theater a-b") == "theater ab"
    assert normalize_answer("«São Paulo»") == "«são paulo»"  # only ASCII punctuation goes
    with pytest.raises(AttributeError):
        normalize_answer(1)


# --------------------------------------------------------------------------- (b) gold as prediction


def test_gold_as_prediction_synthetic():
    rng = random.Random(7)
    golds = [json.dumps(rng.sample(POOL, rng.choice([0, 1, 3]))) for _ in range(300)]
    m = score_queries(golds, golds)
    for key in ("precision", "recall", "f1"):
        assert 0.9999999 < m[key] < 1.0
    assert m["n_correct"] == m["n_pred"] == m["n_gold"] and m["malformed"] == 0


def test_gold_as_prediction_official_file(data_root):
    items = json.loads((data_root / "uniner_json" / "CrossNER_AI.json").read_text())
    golds = [x["conversations"][-1]["value"] for x in items]
    m = score_queries(golds, golds)
    assert m["queries"] == 5603 and m["malformed"] == 0
    assert m["empty_query_fp"] == 0 and m["empty_query_fp_rate"] == 0.0
    assert m["empty_queries"] == sum(ref_parser(g) == [] for g in golds)
    assert 0.9999999 < m["f1"] < 1.0
    assert m == {**m, **ref_evaluate(golds, golds)}
    # every type was asked of every sentence: 13 per-type groups of 431
    types = [re.search(r"What describes (.*) in the text\?", x["conversations"][-2]["value"])[1]
             for x in items]
    by_type = score_by(golds, golds, types)
    assert len(by_type) == 13 and {v["queries"] for v in by_type.values()} == {431}


# --------------------------------------------------------------------------- (c) counts


def test_empty_query_false_positive_rate():
    golds = ["[]", "[]", "[]", "[]", '["Ada"]', '["Ada"]']
    preds = ["[]", '["Bob"]', "garbage", ' ["Bob"]', '["ada", "x"]', "[1]"]
    m = score_queries(preds, golds)
    assert m["queries"] == 6
    assert m["empty_queries"] == 4
    assert m["empty_query_fp"] == 1  # the garbage and the leading-space list both read as []
    assert m["empty_query_fp_rate"] == 0.25
    assert m["malformed"] == 3
    # the garbage and the leading-space list: no clean list, so never counted as FP
    assert m["empty_query_malformed"] == 2 and m["empty_query_malformed_rate"] == 0.5
    assert (m["n_pred"], m["n_gold"], m["n_correct"]) == (3, 2, 1)
    # a model that never closes a list: 0% FP, 100% malformed (plus an empty output)
    unclosed = score_queries(['["prod", "prod', '["Mon", "Cr', ""], ["[]"] * 3)
    assert unclosed["empty_query_fp_rate"] == 0.0
    assert unclosed["empty_query_malformed_rate"] == 1.0
    assert score_queries(['["a"]'], ['["a"]'])["empty_query_fp_rate"] == 0.0
    assert score_queries([], [])["f1"] == 0.0
    with pytest.raises(ValueError):
        score_queries(["[]"], [])


def test_score_by_and_merging_and_average():
    rng = random.Random(3)
    preds, golds, _ = make_query_set(rng)
    while len(preds) < 12:
        p, g, _ = make_query_set(rng)
        preds, golds = preds + p, golds + g
    keys = [i % 3 for i in range(len(preds))]
    groups = score_by(preds, golds, keys)
    assert list(groups) == [0, 1, 2]
    total = QueryScore()
    for k in groups:
        part = QueryScore().update([p for p, x in zip(preds, keys) if x == k],
                                   [g for g, x in zip(golds, keys) if x == k])
        assert part.as_dict() == groups[k]
        total += part
    assert total.as_dict() == score_queries(preds, golds)

    avg = benchmark_average({"a": {"f1": 0.2, "precision": 0.1, "recall": 0.5,
                                   "empty_query_fp_rate": 0.3},
                             "b": {"f1": 0.6, "precision": 0.3, "recall": 0.7,
                                   "empty_query_fp_rate": 0.1}})
    assert avg == pytest.approx({"f1": 0.4, "precision": 0.2, "recall": 0.6,
                                 "empty_query_fp_rate": 0.2, "datasets": 2})
    # the paper's ablation row: frequency sampling, mean of seven dataset F1s
    seven = dict(zip("abcdefg", [{"f1": x} for x in (50.1, 55.0, 60.2, 64.3, 57.4, 45.0, 42.0)]))
    assert benchmark_average(seven)["f1"] == pytest.approx(53.42857142857143)
    with pytest.raises(ValueError):
        benchmark_average({})


def test_fast_enough():
    rng = random.Random(0)
    golds = [json.dumps(rng.sample(POOL, rng.choice([0, 0, 0, 0, 1, 2]))) for _ in range(50_000)]
    preds = [perturb(json.loads(g), rng)[0] if i % 2 else g for i, g in enumerate(golds)]
    _, best = cpu_seconds(lambda: score_queries(preds, golds), repeat=3)
    assert best < 1.0  # CPU seconds, best of three: the wall clock depends on the load


# --------------------------------------------------------------------------- (e) grounding


def test_ground_repeated_and_overlapping_mentions():
    text = "I love New York and York , New York too"
    assert ground(text, ["New York"]) == [(7, 15), (27, 35)]
    assert ground(text, ["York"]) == [(11, 15), (20, 24), (31, 35)]
    assert ground(text, ["New York", "York"]) == [(7, 15), (11, 15), (20, 24), (27, 35),
                                                  (31, 35)]
    g = ground_spans(text, ["new york", "Boston", "", "  York "])
    assert g.spans == [(7, 15), (11, 15), (20, 24), (27, 35), (31, 35)]
    assert g.ungrounded == ["Boston", ""]


def test_ground_case_and_word_preferences():
    assert ground("Apple sells apple juice", ["apple"]) == [(12, 17)]  # exact case first
    assert ground("APPLE sells", ["apple"]) == [(0, 5)]  # case-insensitive fallback
    assert ground("Yorkshire and York", ["York"]) == [(14, 18)]  # not inside a word ...
    assert ground("Yorkshire", ["York"]) == [(0, 4)]  # ... unless that is the only place
    assert ground("aaaa", ["aa"]) == [(0, 2), (2, 4)]  # non-overlapping occurrences
    assert ground("C++ and C", ["C++"]) == [(0, 3)]
    assert ground("x", []) == []


def test_parse_mentions_keeps_raw_strings():
    assert parse_mentions('["The Beatles", "The Beatles", "U.S."] etc') == (
        ["The Beatles", "U.S."], False)
    assert parse_mentions(' ["a"]') == ([], True)
    assert parse_mentions("") == ([], False)
    assert parse_mentions("[1]") == ([], True)


def test_strict_scores_counts():
    text = "New York meets New York and Boston"
    queries = [
        SpanQuery(text, "city", '["New York", "Paris"]', [(0, 8), (15, 23)], id="s1"),
        {"text": text, "type": "person", "pred": '["Boston"]', "gold": [], "id": "s1"},
        SpanQuery(text, "location", "oops", [(28, 34)], id="s1"),
    ]
    m = strict_scores(queries)
    assert (m["n_pred"], m["n_gold"], m["n_correct"]) == (3, 3, 2)
    assert m["precision"] == m["recall"] == pytest.approx(2 / 3)
    assert (m["ungroundable"], m["malformed"], m["queries"]) == (1, 1, 3)
    assert m["per_type"]["city"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert m["per_type"]["person"]["precision"] == 0.0
    # only one of the two mentions is gold: the other grounded span is a false positive
    one = strict_scores([SpanQuery(text, "city", '["New York"]', [(0, 8)])])
    assert (one["precision"], one["recall"]) == (0.5, 1.0)
    assert strict_scores([])["f1"] == 0.0


# --------------------------------------------------------------------------- BIO tags


def test_bio_tags_snapping_and_conflicts():
    text = "the New York City council met"
    assert bio_tags(text, [(4, 12, "loc")]) == ["O", "B-loc", "I-loc", "O", "O", "O"]
    t = tag_spans(text, [(5, 10, "loc")])  # "ew Yo": snapped outward to "New York"
    assert t.tags == ["O", "B-loc", "I-loc", "O", "O", "O"] and t.snapped == 1
    t = tag_spans(text, [(8, 12, "city"), (4, 17, "loc"), (4, 17, "org"), (4, 17, "loc"),
                         (3, 4, "x"), (0, 0, "y")])
    assert t.tags == ["O", "B-loc", "I-loc", "I-loc", "O", "O"]  # longest, then first given
    assert (t.conflicts, t.unplaced, t.snapped) == (2, 2, 0)
    adjacent = bio_tags("a b c", [(0, 1, "t"), (2, 3, "t")])
    assert adjacent == ["B-t", "B-t", "O"]
    assert bio_tags("", []) == []


def _bio_to_spans(tokens, tags):
    """Character spans of IOB2 entities over tokens joined by single spaces."""
    spans, starts, pos = [], [], 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok) + 1
    cur = None
    for i, tag in enumerate(tags + ["O"]):
        if cur and not (tag.startswith("I-") and tag[2:] == cur[2]):
            spans.append((starts[cur[0]], starts[cur[1]] + len(tokens[cur[1]]), cur[2]))
            cur = None
        if tag.startswith("B-"):
            cur = [i, i, tag[2:]]
        elif tag.startswith("I-"):
            cur[1] = i
    return spans


def test_bio_tags_round_trip_on_crossner(data_root):
    sentences, cur = [], []
    for line in (data_root / "crossner" / "ai" / "test.txt").read_text().splitlines():
        if line.strip():
            cur.append(line.split("\t"))
        elif cur:
            sentences.append(cur)
            cur = []
    if cur:
        sentences.append(cur)
    assert len(sentences) == 431
    n_spans = 0
    for sent in sentences:
        tokens, tags = [t for t, _ in sent], [g for _, g in sent]
        spans = _bio_to_spans(tokens, tags)
        n_spans += len(spans)
        t = tag_spans(" ".join(tokens), spans)
        assert t.tags == tags and (t.snapped, t.conflicts, t.unplaced) == (0, 0, 0)
    assert n_spans == 1809


def test_strict_recalls_every_official_span(data_root):
    """Gold names as predictions ground back onto every gold span of the InstructUIE file."""
    rows = json.loads((data_root / "instructuie" / "CrossNER_AI" / "test.json").read_text())
    types = sorted({e["type"] for r in rows for e in r["entities"]})
    queries = []
    for i, r in enumerate(rows):
        for etype in types:
            ents = [e for e in r["entities"] if e["type"] == etype]
            queries.append(SpanQuery(r["sentence"], etype, json.dumps([e["name"] for e in ents]),
                                     [tuple(e["pos"]) for e in ents], id=i))
    m = strict_scores(queries)
    assert m["n_gold"] == 1804 and m["recall"] == 1.0 and m["ungroundable"] == 0
    assert 0.95 < m["precision"] < 1.0  # repeated names that are not always annotated


# --------------------------------------------------------------------------- (d) strict vs seqeval


def _synthetic_corpus(rng, n_sentences=200, types=("per", "loc", "org", "misc")):
    """Sentences of unique tokens with gold and predicted non-overlapping typed token spans."""
    corpus = []
    for s in range(n_sentences):
        n = rng.randint(1, 25)
        tokens = [f"w{s}x{i}" + rng.choice(["", "y", "zz"]) for i in range(n)]
        gold, pred, i = [], [], 0
        while i < n:  # gold: random non-overlapping token ranges
            if rng.random() < 0.3:
                j = min(n, i + rng.randint(1, 3))
                gold.append((i, j, rng.choice(types)))
                i = j + rng.randint(0, 1)
            else:
                i += 1
        taken = set()
        for a, b, t in gold:  # prediction: keep, retype, resize or drop each gold span
            r = rng.random()
            if r < 0.15:
                continue
            if r < 0.3:
                t = rng.choice(types)
            elif r < 0.45:
                a, b = (a, min(n, b + 1)) if rng.random() < 0.5 else (a, max(a + 1, b - 1))
            if taken.isdisjoint(range(a, b)):
                pred.append((a, b, t))
                taken.update(range(a, b))
        for _ in range(rng.randint(0, 2)):  # spurious spans on free tokens
            a = rng.randrange(n)
            b = min(n, a + rng.randint(1, 2))
            if taken.isdisjoint(range(a, b)):
                pred.append((a, b, rng.choice(types)))
                taken.update(range(a, b))
        corpus.append((tokens, gold, pred))
    return corpus


def _char_spans(tokens, spans):
    starts, pos = [], 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok) + 1
    return [(starts[a], starts[b - 1] + len(tokens[b - 1]), t) for a, b, t in spans]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["default", "strict"])
def test_strict_agrees_with_seqeval(seed, mode):
    rng = random.Random(seed)
    types = ("per", "loc", "org", "misc")
    queries, gold_seqs, pred_seqs = [], [], []
    for sid, (tokens, gold, pred) in enumerate(_synthetic_corpus(rng, types=types)):
        text = " ".join(tokens)
        gold_c, pred_c = _char_spans(tokens, gold), _char_spans(tokens, pred)
        gold_seqs.append(bio_tags(text, gold_c))
        pred_seqs.append(bio_tags(text, pred_c))
        for etype in types:  # every type asked of every sentence, as the official protocol
            names = [text[s:e] for s, e, t in pred_c if t == etype]
            queries.append({"id": sid, "text": text, "type": etype, "pred": json.dumps(names),
                            "gold": [(s, e) for s, e, t in gold_c if t == etype]})
    strict = strict_scores(queries)
    seq = seqeval_scores(gold_seqs, pred_seqs, mode=mode)
    assert strict["ungroundable"] == 0 and 0.3 < strict["f1"] < 0.95
    for key in ("precision", "recall", "f1"):
        assert abs(strict[key] - seq[key]) <= 1e-12
    assert seq["support"] == strict["n_gold"]
    assert set(seq["per_type"]) == set(strict["per_type"])
    for etype, m in seq["per_type"].items():
        for key in ("precision", "recall", "f1", "support"):
            assert m[key] == pytest.approx(strict["per_type"][etype][key], abs=1e-12)


def test_seqeval_modes_differ_on_invalid_iob2():
    gold = [["B-a", "I-a", "O"]]
    pred = [["I-a", "I-a", "O"]]  # an I- with no B-: CoNLL reading accepts it, strict does not
    assert seqeval_scores(gold, pred)["f1"] == 1.0
    assert seqeval_scores(gold, pred, mode="strict")["f1"] == 0.0
    assert seqeval_scores([["O"]], [["O"]])["f1"] == 0.0
    with pytest.raises(ValueError):
        seqeval_scores(gold, pred, mode="lenient")


@pytest.mark.parametrize("outputs, says", [
    (["Sure! The text mentions"] * 4, "all 4 answers are malformed"),
    (["[]", "[]", "Sure", "Well"], "2 of 4 answers are malformed"),
    (["[]"] * 4, "every one of the 4 answers is []"),
    (['["Ada"]', "[]", "[]", "Sure"], None),
], ids=["all-malformed", "half-malformed", "all-empty", "answers"])
def test_the_table_says_what_its_numbers_cannot(outputs, says):
    from uniner.evaluation.scoring import Evaluation

    rows = [{"output": o, "items": ["ada"] if o.startswith('["') else []} for o in outputs]
    ev = Evaluation(results={}, per_domain={}, rows=rows,
                    counts={"malformed": sum(not o.startswith("[") for o in outputs)})
    caveats = ev.caveats()
    assert (caveats == []) if says is None else caveats[0].startswith(says)
    assert all(c in ev.table() for c in caveats)
