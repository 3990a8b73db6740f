import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from uniner.cli import prepare
from uniner.config import CONF_DIR as CONF
from uniner.data.readers import read_pile_ner

SOURCES = {
    "sample": [],
    "bio": ["data.source.path=${paths.data_root}/crossner/politics/dev.txt",
            "+data.source.label_map={country: country, election: election, event: event,"
            " location: location, misc: null, organisation: organization, person: person,"
            " politicalparty: political party, politician: politician}"],
    "instructuie": ["data.source.path=${paths.data_root}/instructuie/mit-restaurant",
                    "data.source.split=dev"],
}


def run_prepare(overrides, out, monkeypatch, data_root):
    monkeypatch.setenv("UNINER_DATA", str(data_root))
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("prepare", overrides=overrides + [f"data.cache_dir={out}/cache"])
    return prepare.run(cfg, out)


@pytest.mark.parametrize("data", sorted(SOURCES))
@pytest.mark.parametrize("sampling", ["none", "uniform", "frequency"])
def test_prepare_every_source_and_strategy(data, sampling, tmp_path, monkeypatch, data_root):
    stats = run_prepare([f"data={data}", f"sampling={sampling}"] + SOURCES[data], tmp_path,
                        monkeypatch, data_root)
    items = json.loads((tmp_path / "conversations.json").read_text())
    assert len(items) == stats["passages"] > 0
    assert (tmp_path / "stats.md").read_text().startswith("| what | count |")
    # the written file is the released format: it reads back to the same passages
    back = read_pile_ner(tmp_path / "conversations.json")
    # answers list distinct strings, so repeated mentions in a passage collapse
    assert 0 < sum(len(p.mentions) for p in back) <= stats["entities"]
    n_types = stats["distinct_types"]  # k=3 negatives, fewer where fewer types are absent
    expected = sum(min(3, n_types - len(p.types)) for p in back)
    assert stats["negative_queries"] == (0 if sampling == "none" else expected)
    assert stats["positive_queries"] == sum(len(p.types) for p in back)
    assert sum(len(p.negatives) for p in back) == stats["negative_queries"]
    assert stats["tokens_per_conversation"]["max"] <= 1024
    assert [row["tier"] for row in stats["head_tail"]] == ["top 1%", "top 1-10%", "rest (90%)"]


def test_same_seed_same_conversations(tmp_path, monkeypatch, data_root):
    a = run_prepare(["seed=3"], tmp_path / "a", monkeypatch, data_root)
    b = run_prepare(["seed=3"], tmp_path / "b", monkeypatch, data_root)
    run_prepare(["seed=4"], tmp_path / "c", monkeypatch, data_root)
    assert a == b
    read = lambda d: (tmp_path / d / "conversations.json").read_text()  # noqa: E731
    assert read("a") == read("b") != read("c")


def test_max_length_drops_are_reported(tmp_path, monkeypatch, data_root):
    stats = run_prepare(["data.max_length=96"], tmp_path, monkeypatch, data_root)
    assert stats["dropped"]
    assert stats["tokens_per_conversation"]["max"] <= 96
    assert "Dropped:" in (tmp_path / "stats.md").read_text()
