"""Stage 4, evaluation: benchmark queries, the official and strict metrics, scoring and tables."""
