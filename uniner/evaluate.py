"""Scoring answers of benchmark queries and the results table in the paper's layout."""

from __future__ import annotations


def results_table(results: dict[str, dict], missing: list[str] | tuple = ()) -> str:
    """Markdown: one row per dataset (P, R, F1, empty-query false-positive rate) and the average."""
    lines = ["| dataset | queries | precision | recall | F1 | empty-query FP rate |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, m in results.items():
        label = "**average**" if name == "average" else name
        queries = m.get("queries", "")
        lines.append(f"| {label} | {queries} | {100 * m['precision']:.2f} | "
                     f"{100 * m['recall']:.2f} | {100 * m['f1']:.2f} | "
                     f"{100 * m.get('empty_query_fp_rate', 0.0):.1f}% |")
    lines += [f"| {name} | missing | | | | |" for name in missing]
    return "\n".join(lines) + "\n"
