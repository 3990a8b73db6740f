"""Stage 1, data: source files -> passages -> negative sampling -> conversations -> token ids.

records (passages, mentions, errors), readers (one per format), sources (a source config to
passages), sampling (negatives), prompts (the conversation template: the one owner of prompt
text), encoding (ids and labels, turn by turn), batching (packing, token budgets), datamodule
(the Lightning DataModule wiring them), stats (corpus statistics).
"""
