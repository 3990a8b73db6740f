"""Stage 1, data: source files -> passages -> negative sampling -> conversations -> token ids.

records (passages, mentions, errors), spans (the one string-to-span matcher), readers (one per
format, one error policy; a new format goes there), sources (a source config to passages, mixes),
datasets (a benchmark dataset read as a source at a split, the `supervised` source), sampling
(negatives), prompts (the conversation template: the one owner of prompt text), encoding (ids and
labels, turn by turn), batching (packing, token budgets), datamodule (the Lightning DataModule
wiring them), stats (corpus statistics).
"""
