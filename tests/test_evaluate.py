"""uniner-eval, the benchmark configs and the supervised source, on the real data."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from wandb_offline import finished_records

from uniner.cli import eval as evaluate
from uniner.cli import prepare
from uniner.config import CONF_DIR
from uniner.data.datasets import dataset_entries
from uniner.data.readers import read_uniner_json
from uniner.data.records import DataError
from uniner.data.sampling import NegativeSampler
from uniner.data.sources import load_passages
from uniner.errors import MissingFileError
from uniner.evaluation import scoring
from uniner.evaluation.benchmark import BenchmarkArgs, load_benchmark
from uniner.evaluation.metric import SpanQuery, ground_spans, strict_scores
from uniner.evaluation.tagging import seqeval_scores, tag_spans

CONF = Path(CONF_DIR)

# sentences x types of the 7 zero-shot test sets (the official protocol: misc never asked)
ZERO_SHOT = {"crossner_ai": (431, 13), "crossner_literature": (416, 11),
             "crossner_music": (465, 12), "crossner_politics": (651, 8),
             "crossner_science": (543, 16), "mit_movie": (2443, 12), "mit_restaurant": (1521, 8)}
PRESENT = {"crossner_ai", "crossner_literature", "crossner_music", "crossner_politics",
           "crossner_science", "mit_movie", "mit_restaurant", "ncbi", "bc5cdr"}


def compose_cfg(name, overrides, data_root, monkeypatch, out=None):
    monkeypatch.setenv("UNINER_DATA", str(data_root))
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    if out is not None:
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    return cfg


def official_benchmark(data_root):
    return ["benchmark.datasets.sample=null",
            "+benchmark.datasets.crossner_ai_official={domain: general, format: uniner_json, "
            f"path: '{data_root}/uniner_json/CrossNER_AI.json'}}"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def count_sentences(path: Path) -> int:
    blocks, rows = 0, 0
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            rows += 1
        elif rows:
            blocks, rows = blocks + 1, 0
    return blocks + (rows > 0)


# --- the official file, its own gold as predictions ------------------------------------------

def test_official_file_with_its_gold_scores_one(tmp_path, monkeypatch, data_root):
    items = json.loads((data_root / "uniner_json/CrossNER_AI.json").read_text())
    preds = write_jsonl(tmp_path / "preds.jsonl", [
        {"id": it["id"], "output": it["conversations"][-1]["value"]} for it in items])
    cfg = compose_cfg("eval", ["benchmark=sample", f"predictions={preds}", *official_benchmark(
        data_root)], data_root, monkeypatch, tmp_path / "out")
    metrics = evaluate.run(cfg, tmp_path / "out")
    m = metrics["crossner_ai_official"]
    assert m["queries"] == len(items) == 5603
    for key in ("precision", "recall", "f1"):
        assert m[key] == pytest.approx(1.0, abs=1e-9)
        assert metrics["average"][key] == pytest.approx(1.0, abs=1e-9)
    assert m["malformed"] == 0 and m["empty_query_fp_rate"] == 0.0
    assert set(m["per_type"]) == {"algorithm", "conference", "country", "field", "location",
                                  "metrics", "organization", "person", "product",
                                  "program language", "researcher", "task", "university"}
    rows = [json.loads(line) for line in (tmp_path / "out/predictions.jsonl").open()]
    assert len(rows) == 5603 and set(rows[0]) == {"id", "dataset", "type", "output", "items",
                                                  "gold"}
    assert (tmp_path / "out/results.md").read_text().startswith("| dataset | queries |")
    with pytest.raises(ValueError, match="metric=strict"):  # no gold spans in that form
        evaluate.run(compose_cfg("eval", ["benchmark=sample", f"predictions={preds}",
                                          "metric=strict", *official_benchmark(data_root)],
                                 data_root, monkeypatch, tmp_path / "o2"), tmp_path / "o2")


# --- the zero-shot benchmark built from the source files -------------------------------------

@pytest.fixture(scope="module")
def zero_shot(data_root):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=["benchmark=zero_shot", f"paths.data_root={data_root}"])
    queries, missing = load_benchmark(cfg.benchmark)
    return cfg, queries, missing


def test_zero_shot_has_the_official_query_counts(zero_shot, data_root):
    cfg, queries, missing = zero_shot
    assert missing == []
    counts = {}
    for q in queries:
        counts[q.dataset] = counts.get(q.dataset, 0) + 1
    assert counts == {name: s * t for name, (s, t) in ZERO_SHOT.items()}
    assert counts["crossner_ai"] == 5603
    for ds in dataset_entries(cfg.benchmark.datasets):  # the numbers are those of the files
        sentences, types = ZERO_SHOT[ds["name"]]
        assert count_sentences(Path(ds["path"])) == sentences
        assert len({v for v in ds["label_map"].values() if v}) == types
        assert "misc" not in {q.type for q in queries if q.dataset == ds["name"]}


def test_zero_shot_reproduces_the_official_crossner_ai_file(zero_shot, data_root):
    _, queries, _ = zero_shot
    ours = [q for q in queries if q.dataset == "crossner_ai"]
    official = read_uniner_json(data_root / "uniner_json/CrossNER_AI.json")
    assert len(official) == len(ours) == 5603  # this source file ends with a blank line
    # the official file asks a sentence's 13 types in a random order: compare per sentence
    theirs = {(i // 13, q["type"]): q for i, q in enumerate(official)}
    sentence_index = {s: i for i, s in enumerate(dict.fromkeys(q.sentence for q in ours))}
    differ = []
    for q in ours:
        t = theirs[(sentence_index[q.sentence], q.type)]
        assert t["text"] == q.text
        if list(dict.fromkeys(t["gold"])) != list(q.gold):
            differ.append((q, t))
    assert len(differ) == 4
    assert sorted(q.gold[-1] for q, _ in differ) == ["Confusion matrix", "Kismet", "PSOLA",
                                                     "hinge loss"]
    for q, t in differ:  # the slip: the official gold lost the entity that ends the sentence
        assert list(dict.fromkeys(t["gold"])) == list(q.gold[:-1])
        assert q.text.endswith(" " + q.gold[-1])
        assert max(e for _, e in q.spans) == len(q.text)


def test_strict_and_seqeval_agree_where_both_apply(zero_shot):
    _, queries, _ = zero_shot
    qs = [q for q in queries if q.dataset in ("crossner_ai", "mit_restaurant")]
    outputs = []
    for i, q in enumerate(qs):  # gold with dropped, added and re-cased items
        items = list(q.gold)
        if i % 5 == 0:
            items = items[:-1]
        if i % 7 == 0:
            items.append(q.text.split()[i % len(q.text.split())])
        if i % 11 == 0:
            items = [s.upper() for s in items]
        outputs.append(json.dumps(items))
    # sentences whose gold and predicted spans BIO can hold as they are
    by_sentence = {}
    for q, out in zip(qs, outputs):
        text, gold, pred = by_sentence.setdefault(q.sentence, (q.text, [], []))
        gold += [(s, e, q.type) for s, e in q.spans]
        pred += [(s, e, q.type) for s, e in ground_spans(q.text, json.loads(out)).spans]
    clean = {k for k, (text, g, p) in by_sentence.items()
             if not any(t.conflicts or t.snapped for t in (tag_spans(text, g), tag_spans(text, p)))}
    assert len(clean) > 1000
    keep = [i for i, q in enumerate(qs) if q.sentence in clean]
    ev = scoring.evaluate([qs[i] for i in keep], [outputs[i] for i in keep], metric="both")
    for name in ("crossner_ai", "mit_restaurant"):
        strict = ev.results[name]["strict"]
        seqeval = strict["seqeval"]
        assert seqeval["tagging_conflicts"] == 0
        assert 0.5 < strict["f1"] < 1.0
        for key in ("precision", "recall", "f1"):
            assert strict[key] == pytest.approx(seqeval[key], abs=1e-9)
        assert strict["n_gold"] == seqeval["support"]
    # and the metric functions agree with each other directly on one dataset
    sub = [(qs[i], outputs[i]) for i in keep if qs[i].dataset == "mit_restaurant"]
    direct = strict_scores(SpanQuery(q.text, q.type, o, q.spans, q.sentence) for q, o in sub)
    assert direct["f1"] == pytest.approx(ev.results["mit_restaurant"]["strict"]["f1"])
    gold_tags = [tag_spans(by_sentence[s][0], by_sentence[s][1]).tags
                 for s in dict.fromkeys(q.sentence for q, _ in sub)]
    assert seqeval_scores(gold_tags, gold_tags)["f1"] == 1.0


def test_max_sentences_keeps_the_first_sentences(data_root, monkeypatch):
    cfg = compose_cfg("eval", ["benchmark=zero_shot", "benchmark.max_sentences=3"], data_root,
                      monkeypatch)
    queries, _ = load_benchmark(cfg.benchmark)
    assert len(queries) == 3 * sum(t for _, t in ZERO_SHOT.values())
    cfg = compose_cfg("eval", ["benchmark=sample", "benchmark.max_sentences=2",
                               *official_benchmark(data_root)], data_root, monkeypatch)
    assert len(load_benchmark(cfg.benchmark)[0]) == 2 * 13


# --- universal and supervised: missing files -------------------------------------------------

@pytest.mark.parametrize("bench, n", [("universal", 49), ("supervised", 20)])
def test_benchmarks_list_absent_datasets_as_missing(bench, n, data_root, monkeypatch):
    cfg = compose_cfg("eval", [f"benchmark={bench}", "benchmark.max_sentences=2"],
                      data_root, monkeypatch)
    entries = dataset_entries(cfg.benchmark.datasets)
    assert len(entries) == n
    queries, missing = load_benchmark(cfg.benchmark)
    found = {q.dataset for q in queries}
    assert found == PRESENT & {e["name"] for e in entries}
    assert set(missing) == {e["name"] for e in entries} - found
    if bench == "universal":
        assert {e["domain"] for e in entries} == {
            "general", "biomedical", "clinical", "STEM", "programming", "social media", "law",
            "finance", "transportation"}
    else:
        assert all(e.get("train") for e in entries)
    types = {name: {q.type for q in queries if q.dataset == name} for name in found}
    assert types["ncbi"] == {"disease"} and types["bc5cdr"] == {"chemical", "disease"}
    cfg.benchmark.strict_files = True
    with pytest.raises(MissingFileError, match=r"benchmark\.datasets\.\w+: .* not found"):
        load_benchmark(cfg.benchmark)


def test_wnut17_node_adds_to_a_benchmark(data_root, monkeypatch):
    cfg = compose_cfg("eval", ["benchmark=zero_shot", "benchmark.max_sentences=1",
                               "+benchmark/datasets@benchmark.datasets.wnut17=wnut17"],
                      data_root, monkeypatch)
    queries, _ = load_benchmark(cfg.benchmark)
    assert {q.type for q in queries if q.dataset == "wnut17"} == {
        "corporation", "creative work", "group", "location", "person", "product"}


def test_supervised_source_asks_every_type_of_its_dataset(data_root, monkeypatch):
    cfg = compose_cfg("train", ["data=supervised",
                                "data.source.parts.supervised.max_sentences=40",
                                "data.source.parts.pile_ner.weight=0.5",
                                "data.source.parts.pile_ner.path=${asset:sample.json}"],
                      data_root, monkeypatch)
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    passages = load_passages(source)
    by_part = {}
    for p in passages:
        by_part.setdefault(p.id.split("/")[1] if p.id.startswith("supervised/") else "pile",
                           []).append(p)
    assert {k: len(v) for k, v in by_part.items()} == {
        "bc5cdr": 40, "mit_movie": 40, "mit_restaurant": 40, "ncbi": 40, "pile": 24}
    sampler = NegativeSampler(strategy="none", k=None, keep_source_negatives=True)
    asked = sampler.queries(passages)
    labels = {"bc5cdr": {"chemical", "disease"}, "ncbi": {"disease"},
              "mit_restaurant": {"Amenity", "Cuisine", "Dish", "Hours", "Location", "Price",
                                 "Rating", "Restaurant Name"}}
    for p, types in zip(passages, asked):
        name = p.id.split("/")[1]
        if name in labels:
            assert sorted(types) == sorted(labels[name])
            assert set(p.negatives) == labels[name] - set(p.types)
        elif name == "mit_movie":
            assert len(types) == 12
    with pytest.raises(FileNotFoundError, match="supervised dataset ace05"):
        load_passages({**source, "parts": {"supervised": {
            **source["parts"]["supervised"], "strict_files": True}}})


# --- predictions files: bad input ------------------------------------------------------------

def test_unknown_ids_and_missing_predictions(tmp_path, monkeypatch, data_root):
    items = json.loads((data_root / "uniner_json/CrossNER_AI.json").read_text())[:26]
    rows = [{"id": it["id"], "output": it["conversations"][-1]["value"]} for it in items]
    base = ["benchmark=sample", "benchmark.max_sentences=2", *official_benchmark(data_root)]

    def run(rows, *extra):
        preds = write_jsonl(tmp_path / "p.jsonl", rows)
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        cfg = compose_cfg("eval", [*base, f"predictions={preds}", *extra], data_root,
                          monkeypatch, out)
        return evaluate.run(cfg, out)

    assert run(rows)["average"]["f1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1 ids that no benchmark query has"):
        run(rows + [{"id": "nope", "output": "[]"}])
    with pytest.raises(ValueError, match="1 of 26 queries have no prediction"):
        run(rows[1:])
    metrics = run(rows[1:] + [{"id": "nope", "output": "[]"}], "allow_missing=true")
    assert metrics["counts"]["unknown_ids"] == 1
    assert metrics["counts"]["missing_predictions"] == 1
    assert metrics["crossner_ai_official"]["queries"] == 26
    with pytest.raises(DataError, match="occurs twice"):
        run(rows + rows[:1])
    with pytest.raises(DataError, match="p.jsonl:2"):
        preds = tmp_path / "p.jsonl"
        preds.write_text('{"id": "a", "output": "[]"}\n{"id": "b"\n')
        scoring.read_predictions(preds)


def test_prepare_writes_the_official_form_and_eval_reads_it_back(tmp_path, monkeypatch,
                                                                 data_root):
    cfg = compose_cfg("prepare", ["mode=benchmark", "benchmark=zero_shot",
                                  "benchmark.max_sentences=5"], data_root, monkeypatch)
    summary = prepare.run(cfg, tmp_path)
    assert summary["datasets"]["crossner_ai"] == {"file": "crossner_ai.json", "queries": 65,
                                                  "sentences": 5, "types": 13}
    queries, _ = load_benchmark(cfg.benchmark)
    rows = []
    for name in ZERO_SHOT:
        items = read_uniner_json(tmp_path / f"{name}.json")  # the official reader's view
        ours = [q for q in queries if q.dataset == name]
        assert [(i["id"], i["text"], i["type"], i["gold"]) for i in items] == [
            (q.id, q.text, q.type, list(q.gold)) for q in ours]
        raw = json.loads((tmp_path / f"{name}.json").read_text())
        assert [t["from"] for t in raw[0]["conversations"]] == ["human", "gpt", "human", "gpt"]
        rows += [{"id": it["id"], "output": it["conversations"][-1]["value"]} for it in raw]
    preds = write_jsonl(tmp_path / "preds.jsonl", rows)
    cfg = compose_cfg("eval", ["benchmark=zero_shot", "benchmark.max_sentences=5",
                               f"predictions={preds}", "metric=both"], data_root, monkeypatch,
                      tmp_path / "eval")
    metrics = evaluate.run(cfg, tmp_path / "eval")
    for key in ("precision", "recall", "f1"):
        assert metrics["average"][key] == pytest.approx(1.0, abs=1e-9)
    assert set(metrics["per_domain"]) == {"general", "social media"}
    assert "strict F1" in (tmp_path / "eval/results.md").read_text()


def test_wandb_offline_gets_the_metrics_and_files(tmp_path, monkeypatch, data_root):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    items = json.loads((data_root / "uniner_json/CrossNER_AI.json").read_text())[:13]
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": it["id"], "output": "[]"} for it in items])
    out = tmp_path / "out"
    cfg = compose_cfg("eval", ["benchmark=sample", "benchmark.max_sentences=1",
                               f"predictions={preds}", "logger=wandb",
                               *official_benchmark(data_root)], data_root, monkeypatch, out)
    evaluate.run(cfg, out)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = {p.name for p in (runs[0] / "files").iterdir()}
    assert {"predictions.jsonl", "metrics.json", "results.md"} <= files
    # the run log (protobuf records) holds the metric keys and the job type, once W&B's writer
    # has written it to the end (it may lag behind wandb.finish() on a busy machine)
    data = b"".join(r.SerializeToString() for r in finished_records(runs[0]))
    assert b"test/crossner_ai_official/f1" in data and b"test/avg/f1" in data
    assert b"test/domain/general/f1" in data and b"eval" in data


# --- end to end: a tiny trained checkpoint ---------------------------------------------------

def test_trained_checkpoint_end_to_end(tmp_path, data_root):
    env = {**os.environ, "UNINER_DATA": str(data_root), "WANDB_MODE": "disabled"}
    train = tmp_path / "train"
    subprocess.run([sys.executable, "-m", "uniner.cli.train", "debug=smoke", "logger=none",
                    "benchmark.max_sentences=2", "module.max_new_tokens=8",
                    f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={train}"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    # uniner-train ends with the same evaluation, its results under `test`
    trained = json.loads((train / "metrics.json").read_text())
    assert {"test", "per_domain", "counts", "missing", "logged"} <= set(trained)
    assert (train / "predictions.jsonl").is_file() and (train / "results.md").is_file()
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, "-m", "uniner.cli.eval",
                           f"checkpoint={train / 'export'}", "benchmark=sample",
                           "benchmark.max_sentences=2", "max_new_tokens=8",
                           f"hydra.run.dir={out}"], cwd=tmp_path, env=env, check=True,
                          capture_output=True, text=True, timeout=600)
    # stderr is a pipe: the run directory at start and end, the answering as plain lines
    assert done.stderr.splitlines().count("run directory: eval") == 2
    assert re.search(r"^answer: (\d+)/\1 queries \(100%\) · ", done.stderr, re.M)
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert metrics["sample"]["queries"] == len(rows) == trained["test"]["sample"]["queries"]
    assert {"precision", "recall", "f1"} <= set(metrics["average"])
    assert (out / "results.md").read_text().count("| sample |") == 1
    # greedy answers of the same weights to the same prompts: what training's test produced
    train_rows = {r["id"]: r["output"] for r in map(json.loads, (train / "predictions.jsonl")
                                                     .open())}
    assert {r["id"]: r["output"] for r in rows} == train_rows


def test_the_sample_benchmark_asks_its_own_questions_and_optional_negatives():
    """`queries: file` asks the sample's own 248 questions (none of them `[]`); `negatives: 3`
    adds 3 frequency-drawn absent types a passage, answered `[]`, seeded and stable under
    `max_sentences`."""
    from uniner.config import asset

    ds = {"name": "sample", "format": "pile_ner", "path": asset("sample.json"),
          "queries": "file"}
    own, _ = load_benchmark(BenchmarkArgs(datasets=[ds]))
    assert len(own) == 248 and not any(q.gold == () for q in own)
    with_negatives, _ = load_benchmark(BenchmarkArgs(datasets=[{**ds, "negatives": 3}]))
    empty = [q for q in with_negatives if q.gold == ()]
    assert len(with_negatives) == 392 and len(empty) == 144
    first_two, _ = load_benchmark(BenchmarkArgs(datasets=[{**ds, "negatives": 3}],
                                                max_sentences=2))
    assert [(q.text, q.type) for q in first_two] == \
        [(q.text, q.type) for q in with_negatives[:len(first_two)]]


def test_metric_both_says_why_there_is_no_strict_column():
    from uniner.evaluation.benchmark import Query
    from uniner.evaluation.scoring import evaluate

    q = Query("q0", "sample", "general", "Ada met Bob.", "person", ("Ada", "Bob"))
    both = evaluate([q], ['["Ada"]'], metric="both").table()
    assert "strict metric: n/a" in both
    assert "strict metric" not in evaluate([q], ['["Ada"]']).table()
