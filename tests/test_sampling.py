import numpy as np
import pytest
from scipy.stats import chisquare

from uniner.data.records import Mention, Passage
from uniner.data.sampling import NegativeSampler


def corpus(n_passages=400, n_types=40, seed=0):
    """Passages with Zipf-distributed types, so type frequencies differ a lot."""
    rng = np.random.default_rng(seed)
    w = 1 / np.arange(1, n_types + 1)
    w /= w.sum()
    out = []
    for i in range(n_passages):
        types = sorted(set(rng.choice(n_types, size=rng.integers(1, 4), p=w).tolist()))
        out.append(Passage(f"p{i}", "text", [Mention(f"m{t}", f"t{t}") for t in types]))
    return out


@pytest.mark.parametrize("strategy", ["uniform", "frequency"])
def test_negatives_are_absent_distinct_and_counted(strategy):
    passages = corpus()
    negatives = NegativeSampler(strategy=strategy, k=5).draw(passages)
    for p, neg in zip(passages, negatives):
        assert len(neg) == 5
        assert len(set(neg)) == 5
        assert not set(neg) & set(p.types)


def test_ratio_counts_per_positive_type():
    passages = corpus()
    negatives = NegativeSampler(strategy="uniform", k=None, ratio=1.5).draw(passages)
    assert [len(n) for n in negatives] == [int(np.ceil(1.5 * len(p.types))) for p in passages]


def test_none_draws_nothing_and_strips_source_negatives():
    p = Passage("a", "t", [Mention("x", "person")], negatives=["award"])
    sampler = NegativeSampler(strategy="none", k=None)
    assert sampler.draw([p]) == [[]]
    assert sampler.queries([p]) == [["person"]]
    kept = NegativeSampler(strategy="none", k=None, keep_source_negatives=True)
    assert sorted(kept.queries([p])[0]) == ["award", "person"]


def test_k_capped_by_absent_types():
    passages = [Passage("a", "t", [Mention("x", "a")]), Passage("b", "t", [Mention("y", "b")])]
    assert NegativeSampler(strategy="uniform", k=10).draw(passages) == [["b"], ["a"]]


def test_frequency_follows_corpus_frequency_and_uniform_is_flat():
    passages = corpus(n_types=10)
    freq = {}
    for p in passages:
        for t in p.types:
            freq[t] = freq.get(t, 0) + 1
    types = sorted(t for t in freq if t != "t39")
    target = Passage("q", "text", [Mention("m", "t39")])
    n = 3000
    for strategy in ("frequency", "uniform"):
        sampler = NegativeSampler(strategy=strategy, k=1, seed=3)
        # one row per draw: many copies of the target passage in one corpus
        drawn = sampler.draw(passages + [target] * n)[-n:]
        observed = np.array([sum(d == [t] for d in drawn) for t in types])
        if strategy == "frequency":
            # the copies of the target add to t39 only, so the others keep their frequencies
            expected = np.array([freq[t] for t in types], dtype=float)
        else:
            expected = np.ones(len(types))
        expected = expected / expected.sum() * observed.sum()
        assert chisquare(observed, expected).pvalue > 1e-3, strategy
    # and the two differ: the head type is drawn far more often under frequency
    f = NegativeSampler(strategy="frequency", k=1).draw(passages + [target] * n)[-n:]
    u = NegativeSampler(strategy="uniform", k=1).draw(passages + [target] * n)[-n:]
    assert sum(d == ["t0"] for d in f) > 2 * sum(d == ["t0"] for d in u)


def test_seeded_and_redrawn_per_epoch():
    passages = corpus()
    a = NegativeSampler(strategy="frequency", k=3, seed=1)
    b = NegativeSampler(strategy="frequency", k=3, seed=1)
    assert a.queries(passages, 0) == b.queries(passages, 0)
    assert a.queries(passages, 0) != a.queries(passages, 1)
    fixed = NegativeSampler(strategy="frequency", k=3, seed=1, redraw_each_epoch=False)
    assert fixed.queries(passages, 0) == fixed.queries(passages, 5)


def test_type_order_is_shuffled():
    passages = [Passage(f"p{i}", "t", [Mention(str(j), f"t{j}") for j in range(6)])
                for i in range(50)]
    orders = {tuple(q) for q in NegativeSampler(strategy="none", k=None).queries(passages)}
    assert len(orders) > 10


@pytest.mark.parametrize("kwargs", [dict(strategy="bogus"), dict(k=None, ratio=None),
                                    dict(k=2, ratio=1.0), dict(k=-1)])
def test_bad_settings_are_errors(kwargs):
    with pytest.raises(ValueError, match="sampling"):
        NegativeSampler(**kwargs)
