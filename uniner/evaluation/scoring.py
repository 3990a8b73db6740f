"""Scoring a benchmark run: raw model outputs of the benchmark's queries -> per-dataset, average
and per-domain metrics (`evaluate`), the files `uniner-eval` and `uniner-train` write
(`write_outputs`), the flat names they log (`flat_metrics`) and the paper's table.

Metrics: `uniner` is the official metric (`metric.score_queries`), `strict` the span-level one
(`metric.strict_scores`, with seqeval's entity-level report on BIO tags rebuilt from the grounded
spans), `both` reports the official metric with the strict one beside it. The reported metrics
of a dataset are declared once, in `REPORTED`: the results table, the benchmark average, the
logged names and `uniner-report`'s tables all follow it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from uniner.data.answers import parse_mentions
from uniner.data.readers import json_lines
from uniner.data.records import DataError
from uniner.errors import ConfigError
from uniner.evaluation.benchmark import Query
from uniner.evaluation.metric import (
    SpanQuery,
    ground_spans,
    score_by,
    score_queries,
    strict_scores,
)
from uniner.evaluation.tagging import seqeval_scores, tag_spans

log = logging.getLogger(__name__)

METRICS = ("uniner", "strict", "both")
AVERAGE = "average"  # metrics.json's name of the benchmark average; `<prefix>/avg/...` logged
OUTSIDE_AVERAGE = "(not in the average)"  # marks a dataset scored beside it (eval and report)
SUMMARY_KEYS = ("metric", "per_domain", "counts", "missing")  # metrics.json beside the datasets
_MEANS = ("f1", "precision", "recall")


@dataclass(frozen=True)
class Reported:
    """A metric every dataset reports: its key (in metrics.json and the logged names), its label
    (table headers) and its table format (of the value in points)."""

    key: str
    label: str
    format: str = "{:.2f}"

    def cell(self, m: Mapping) -> str:
        return self.format.format(100 * m.get(self.key, 0.0))


# One line here adds a metric (computed by `metric.QueryScore`) to metrics.json's average, the
# results table, the logged metrics, the W&B results table and `uniner-report`'s metric names.
REPORTED = (Reported("precision", "precision"), Reported("recall", "recall"),
            Reported("f1", "F1"),
            Reported("empty_query_fp_rate", "empty-query FP rate", "{:.1f}%"),
            # the empty queries answered with no clean list (never an FP by the official parser)
            Reported("empty_query_malformed_rate", "empty-query malformed", "{:.1f}%"))
LABELS = {r.key: r.label for r in REPORTED}


@dataclass
class Evaluation:
    """Scores of one benchmark run.

    `results` is `{dataset: {...}, "average": {...}}`: precision, recall and f1 are those of
    `metric` (the official metric unless `metric == "strict"`), with the query counts, `per_type`,
    and with `strict`/`seqeval` blocks when the strict metric was computed.
    """

    results: dict[str, dict]
    per_domain: dict[str, dict]
    counts: dict[str, int]
    metric: str = "uniner"
    missing: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"metric": self.metric, "per_domain": self.per_domain, "counts": self.counts,
                "missing": list(self.missing)}

    def table(self) -> str:
        table = results_table(self.results, self.missing) + "".join(
            line + "\n" for line in self.caveats())
        if self.metric == "both" and not any(isinstance(m.get("strict"), dict)
                                             for m in self.results.values()):
            # say why the strict column the user asked for is not there
            table += ("strict metric: n/a, no dataset here has gold character spans (only the "
                      "bio and instructuie formats do)\n")
        return table


    def caveats(self) -> list[str]:
        """What the table's numbers cannot say, in words: answers that are mostly malformed
        (the official parser reads them as `[]`, so FP and F1 see no answer) or all `[]`."""
        n = len(self.rows)
        if not n:
            return []
        malformed = self.counts.get("malformed", 0)
        answered = sum(bool(r.get("items")) for r in self.rows)
        if malformed == n:
            return [f"all {n} answers are malformed (no clean JSON list): the official parser "
                    "reads each as [], so this F1 and FP rate describe no answer at all"]
        lines = []
        if malformed * 2 >= n:
            lines.append(f"{malformed} of {n} answers are malformed (no clean JSON list, read "
                         "as []): the FP rate is low for want of answers, not by judgement")
        if answered == 0:
            lines.append(f"every one of the {n} answers is []: an FP rate of 0 here means the "
                         "model answers nothing, not that it tells absent types apart")
        return lines


def results_table(results: dict[str, dict], missing: list[str] | tuple = ()) -> str:
    """Markdown: one row per dataset (queries, then the `REPORTED` metrics) and the average;
    a strict F1 column when the strict metric was computed beside the official one."""
    strict = any(isinstance(m.get("strict"), dict) for m in results.values())
    lines = ["| dataset | queries | " + " | ".join(r.label for r in REPORTED) + " |"
             + (" strict F1 |" if strict else ""),
             "|---|---:|" + "---:|" * len(REPORTED) + ("---:|" if strict else "")]
    for name, m in results.items():
        label = f"**{name}**" if name == AVERAGE else name if m.get("in_average", True) \
            else f"{name} {OUTSIDE_AVERAGE}"
        row = (f"| {label} | {m.get('queries', '')} | "
               + " | ".join(r.cell(m) for r in REPORTED) + " |")
        if strict:
            s = m.get("strict")
            row += f" {100 * s['f1']:.2f} |" if isinstance(s, dict) else " n/a |"
        lines.append(row)
    lines += [f"| {name} | missing |" + " |" * len(REPORTED) + (" |" if strict else "")
              for name in missing]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ scoring


def _seqeval(queries: Sequence[Query], outputs: Sequence[str]) -> dict:
    """seqeval over BIO tags rebuilt per sentence from gold spans and grounded predictions."""
    sentences: dict[str, tuple[str, list, list]] = {}
    for q, out in zip(queries, outputs):
        text, gold, pred = sentences.setdefault(q.sentence, (q.text, [], []))
        gold += [(s, e, q.type) for s, e in q.spans]
        items = [i for i in parse_mentions(out)[0] if isinstance(i, str)]
        pred += [(s, e, q.type) for s, e in ground_spans(q.text, items).spans]
    gold_tags, pred_tags, conflicts = [], [], 0
    for text, gold, pred in sentences.values():
        g, p = tag_spans(text, gold), tag_spans(text, pred)
        gold_tags.append(g.tags)
        pred_tags.append(p.tags)
        conflicts += g.conflicts + g.snapped + p.conflicts + p.snapped
    out = seqeval_scores(gold_tags, pred_tags)
    # spans that BIO cannot hold as given (overlaps, off token boundaries): where this is 0,
    # seqeval and strict agree
    out["tagging_conflicts"] = conflicts
    return out


def score_dataset(queries: Sequence[Query], outputs: Sequence[str], metric: str = "uniner",
                  n_missing: int = 0) -> dict:
    """The metrics of one dataset's queries (see `Evaluation.results`)."""
    golds = [q.gold_text() for q in queries]
    official = score_queries(outputs, golds)
    spans_known = all(q.spans is not None for q in queries)
    if metric == "strict" and not spans_known:
        raise ConfigError(f"metric=strict: dataset {queries[0].dataset} has no gold spans "
                          "(format uniner_json or pile_ner); use metric=uniner or both")
    strict = None
    if metric != "uniner" and spans_known:
        strict = strict_scores(SpanQuery(q.text, q.type, o, q.spans, q.sentence)
                               for q, o in zip(queries, outputs))
        ungroundable = strict["ungroundable"]
    else:
        ungroundable = 0
        for q, o in zip(queries, outputs):
            items = parse_mentions(o)[0]
            strings = [i for i in items if isinstance(i, str)]
            ungroundable += len(items) - len(strings) + len(
                ground_spans(q.text, strings).ungrounded)
    entry = {"domain": queries[0].domain, **({} if queries[0].in_average else
                                            {"in_average": False}),
             **official, "ungroundable": ungroundable,
             "missing_predictions": n_missing,
             "per_type": score_by(outputs, golds, [q.type for q in queries])}
    if strict is not None:
        block = {k: v for k, v in strict.items() if k not in ("queries", "malformed",
                                                               "ungroundable")}
        block["seqeval"] = _seqeval(queries, outputs)
        if metric == "strict":  # the strict metric is the headline
            entry.update({k: block[k] for k in ("precision", "recall", "f1", "n_pred",
                                                "n_gold", "n_correct", "per_type")})
            entry["seqeval"] = block["seqeval"]
        else:
            entry["strict"] = block
    elif metric == "both":
        entry["strict"] = None  # no gold spans: the strict metric does not apply
    return entry


def benchmark_average(per_dataset: Mapping[str, Mapping]) -> dict:
    """Plain (unweighted) mean over datasets of each `REPORTED` metric, as the paper averages
    its benchmark; `datasets` is how many."""
    if not per_dataset:
        raise ValueError("no datasets to average")
    out: dict = {}
    for key in (r.key for r in REPORTED):
        values = [m[key] for m in per_dataset.values() if key in m]
        if values:
            out[key] = sum(values) / len(values)
    out["datasets"] = len(per_dataset)
    return out


def _average(per_dataset: dict[str, dict]) -> dict:
    """The benchmark average over the datasets in it (a dataset with `average: false` in its
    config is scored beside it, not in it; a benchmark of such datasets only averages them
    all, rather than having no average)."""
    per_dataset = {n: m for n, m in per_dataset.items() if m.get("in_average", True)} \
        or per_dataset
    avg = benchmark_average(per_dataset)
    for key in ("strict", "seqeval"):
        blocks = [m[key] for m in per_dataset.values() if isinstance(m.get(key), dict)]
        if blocks:
            avg[key] = {k: sum(b[k] for b in blocks) / len(blocks) for k in _MEANS}
            avg[key]["datasets"] = len(blocks)
    for k in ("queries", "malformed", "ungroundable", "missing_predictions"):
        avg[k] = sum(m.get(k, 0) for m in per_dataset.values())
    return avg


def evaluate(queries: Sequence[Query], outputs: Sequence[str | None], *, metric: str = "uniner",
             missing: Sequence[str] = (), unknown_ids: int = 0) -> Evaluation:
    """Score raw model outputs of benchmark queries.

    Args:
        queries: the benchmark's queries.
        outputs: one raw output per query; None marks a query without a prediction (scored as
            an empty answer and counted in `missing_predictions`).
        metric: `uniner`, `strict` or `both`.
        missing: names of the benchmark's datasets whose files were not found (table rows).
        unknown_ids: predictions of ids that no query has (counted).

    Returns:
        The `Evaluation`: per dataset (in benchmark order), `average` (plain mean of the dataset
        scores, as the paper), per domain (the same mean over its datasets), counts, and one
        row per query for `predictions.jsonl`.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric={metric!r}: choose one of {', '.join(METRICS)}")
    if len(queries) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(queries)} queries")
    if not queries:
        raise ValueError("no benchmark queries to score (all dataset files missing?)")
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q.dataset, []).append(i)
    clash = set(groups) & {AVERAGE, *SUMMARY_KEYS}
    if clash:
        raise ConfigError(f"dataset names {sorted(clash)} are reserved in metrics.json")
    texts = ["" if o is None else o for o in outputs]
    per_dataset = {
        name: score_dataset([queries[i] for i in idx], [texts[i] for i in idx], metric,
                            sum(outputs[i] is None for i in idx))
        for name, idx in groups.items()}
    domains: dict[str, dict] = {}
    for name, m in per_dataset.items():
        domains.setdefault(m["domain"], {})[name] = m
    results = {**per_dataset, AVERAGE: _average(per_dataset)}
    per_domain = {d: {**benchmark_average(ms), "datasets_in": list(ms)}
                  for d, ms in domains.items()}
    counts = {k: sum(m.get(k, 0) for m in per_dataset.values())  # every dataset's
              for k in ("queries", "malformed", "ungroundable", "missing_predictions")}
    counts.update({"unknown_ids": unknown_ids, "datasets": len(per_dataset),
                   "missing_datasets": len(missing)})
    rows = []
    for q, out in zip(queries, outputs):
        rows.append({"id": q.id, "dataset": q.dataset, "type": q.type, "output": out,
                     "items": parse_mentions(out)[0] if out is not None else [],
                     "gold": list(q.gold)})
    return Evaluation(results, per_domain, counts, metric, list(missing), rows)


# ------------------------------------------------------------------------------------ inputs


def read_predictions(path: str | Path) -> dict[str, str]:
    """JSON lines `{"id": ..., "output": ...}` -> {id: output}.

    Raises:
        DataError: a line that is not such an object, a non-string output, a repeated id.
    """
    out: dict[str, str] = {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions={path}: no such file")
    with path.open(encoding="utf-8") as f:
        for lineno, item in json_lines(f, path):
            if not isinstance(item, dict) or "id" not in item or "output" not in item:
                raise DataError('expected {"id": ..., "output": ...}', path, lineno)
            if not isinstance(item["output"], str):
                raise DataError(f"output of id {item['id']!r} is not a string", path, lineno)
            key = str(item["id"])
            if key in out:
                raise DataError(f"id {key!r} occurs twice", path, lineno)
            out[key] = item["output"]
    return out


def match_predictions(queries: Sequence[Query], predictions: dict[str, str], *,
                      allow_missing: bool = False, source: str = "predictions"
                      ) -> tuple[list[str | None], int]:
    """(one output or None per query, number of prediction ids that no query has).

    Raises:
        ValueError: unknown ids or queries without a prediction, unless `allow_missing`.
    """
    ids = {q.id for q in queries}
    unknown = [k for k in predictions if k not in ids]
    outputs = [predictions.get(q.id) for q in queries]
    absent = [q.id for q, o in zip(queries, outputs) if o is None]
    if not allow_missing:
        if unknown:
            raise DataError(f"{len(unknown)} ids that no benchmark query has (first: "
                            f"{unknown[:3]}); wrong benchmark, or ids from another conversion? "
                            "allow_missing=true ignores and counts them", source)
        if absent:
            raise DataError(f"{len(absent)} of {len(queries)} queries have no "
                            f"prediction (first: {absent[:3]}); allow_missing=true scores them "
                            "as empty answers and counts them", source)
    for what, n in (("prediction ids no query has (ignored)", len(unknown)),
                    ("queries without a prediction (scored as empty)", len(absent))):
        if n:
            log.warning("%s: %d %s", source, n, what)
    return outputs, len(unknown)


# ------------------------------------------------------------------------------------ outputs


def write_outputs(out_dir: str | Path, ev: Evaluation, *, key: str | None = None,
                  extra: dict | None = None) -> dict:
    """Write `predictions.jsonl`, `metrics.json` and `results.md`; returns what metrics.json
    holds: the results at the top (or under `key`, as `uniner-train` writes them under `test`),
    then the summary and `extra`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for row in ev.rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    metrics = {key: ev.results} if key else dict(ev.results)
    metrics.update(ev.summary(), **(extra or {}))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    (out / "results.md").write_text(ev.table())
    return metrics


def flat_metrics(ev: Evaluation, prefix: str = "test") -> dict[str, float]:
    """`{prefix}/{dataset|avg}/{metric}` (as `uniner-train` logs them) and
    `{prefix}/domain/{domain}/f1`."""
    out = {}
    for name, m in ev.results.items():
        key = "avg" if name == AVERAGE else name
        for k in (r.key for r in REPORTED):
            if k in m:
                out[f"{prefix}/{key}/{k}"] = float(m[k])
        if isinstance(m.get("strict"), dict):
            out[f"{prefix}/{key}/strict_f1"] = float(m["strict"]["f1"])
    for domain, m in ev.per_domain.items():
        out[f"{prefix}/domain/{domain}/f1"] = float(m["f1"])
    return out
