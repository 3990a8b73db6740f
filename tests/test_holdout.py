"""Held-out passages of a source (`holdout: {fraction, seed}` + `part: train|heldout`): the two
parts are disjoint, together complete, fixed by the holdout seed alone, and the benchmark asks
the held-out part."""

from pathlib import Path

import pytest

from uniner.data.sources import holdout_indices, load_passages
from uniner.errors import ConfigError
from uniner.evaluation.benchmark import dataset_queries


def bio_file(path: Path, n: int = 50) -> Path:
    lines = []
    for i in range(n):
        lines += [f"Ada{i} B-person", "met O", f"Bob{i} B-person" if i % 3 else "Bob O",
                  "in O", "Rome B-location" if i % 2 else "Rome O", ""]
    path.write_text("\n".join(lines))
    return path


def source(path: Path, part: str | None, fraction: float = 0.2, seed: int = 0) -> dict:
    out = {"format": "bio", "path": str(path), "holdout": {"fraction": fraction, "seed": seed}}
    return out if part is None else {**out, "part": part}


def test_parts_are_disjoint_complete_and_in_source_order(tmp_path):
    path = bio_file(tmp_path / "p.txt")
    every = load_passages({"format": "bio", "path": str(path)})
    train = load_passages(source(path, "train"))
    held = load_passages(source(path, "heldout"))
    assert len(held) == 10 and len(train) == 40
    ids = [p.id for p in every]
    assert {p.id for p in train}.isdisjoint(p.id for p in held)
    assert sorted(p.id for p in train + held) == sorted(ids)
    assert [p.id for p in held] == [i for i in ids if i in {p.id for p in held}]  # file order
    assert held[0].mentions == every[ids.index(held[0].id)].mentions  # passages untouched


def test_split_is_fixed_by_the_holdout_seed_alone(tmp_path):
    path = bio_file(tmp_path / "p.txt")
    held = [p.id for p in load_passages(source(path, "heldout"))]
    assert held == [p.id for p in load_passages(source(path, "heldout"))]  # stable
    assert held != [p.id for p in load_passages(source(path, "heldout", seed=1))]
    assert holdout_indices(2217, 0.1, 0) == holdout_indices(2217, 0.1, 0)
    assert len(holdout_indices(2217, 0.1, 0)) == 222
    # a held-out split of a mix: the keys apply to the combined passages
    mixed = load_passages({"format": "mix", "parts": {"a": {"format": "bio", "path": str(path)}},
                           "holdout": {"fraction": 0.2, "seed": 0}, "part": "heldout"})
    assert [p.id for p in mixed] == [f"a/{i}" for i in held]


@pytest.mark.parametrize("bad, message", [
    ({"part": "train"}, "needs both"),
    ({"holdout": {"fraction": 0.1}}, "needs both"),
    ({"holdout": {"fraction": 0.1}, "part": "test"}, "part='test'"),
    ({"holdout": {"fraction": 1.0}, "part": "train"}, r"fraction=1.0: must be in \(0, 1\)"),
    ({"holdout": {"share": 0.1}, "part": "train"}, "unknown keys"),
])
def test_bad_holdout_configs(tmp_path, bad, message):
    path = bio_file(tmp_path / "p.txt", 5)
    with pytest.raises(ConfigError, match=message):
        load_passages({"format": "bio", "path": str(path), **bad})


def test_benchmark_asks_the_heldout_part(tmp_path):
    path = bio_file(tmp_path / "p.txt")
    held = {p.id for p in load_passages(source(path, "heldout"))}
    ds = {"name": "heldout", "domain": "toy", **source(path, "heldout"),
          "types": ["person", "location", "organization"]}
    queries = dataset_queries(ds)
    assert len(queries) == 30 and {q.sentence.removeprefix("heldout_") for q in queries} == held
    assert all(q.gold == () for q in queries if q.type == "organization")  # empty queries


def test_a_dataset_outside_the_average_is_scored_beside_it(tmp_path):
    """`average: false` (the held-out node): its own row, not in the benchmark average, so the
    average stays the paper's mean over the zero-shot sets; counts still cover every query."""
    from uniner.evaluation.benchmark import BenchmarkArgs, load_benchmark
    from uniner.evaluation.scoring import AVERAGE, evaluate

    path = bio_file(tmp_path / "p.txt")
    toy = {"name": "toy", "domain": "toy", "format": "bio", "path": str(path),
           "types": ["person", "location"]}
    held = {**toy, "name": "held", **source(path, "heldout"), "average": False}
    queries, missing = load_benchmark(BenchmarkArgs(datasets=[toy, held], max_sentences=4))
    assert not missing and {q.in_average for q in queries if q.dataset == "held"} == {False}
    # perfect answers on `toy`, `[]` everywhere on `held`
    outputs = [q.gold_text() if q.dataset == "toy" else "[]" for q in queries]
    ev = evaluate(queries, outputs)
    assert ev.results["toy"]["f1"] > 0.99 and ev.results["held"]["f1"] < 0.01
    assert ev.results[AVERAGE]["f1"] == ev.results["toy"]["f1"]
    assert ev.results[AVERAGE]["datasets"] == 1 and ev.counts["queries"] == len(queries)
    assert "| held (not in the average) |" in ev.table()
