"""What several tests share about tiny models: the architecture families the backbone configs
name, and reading back the supervised part of an encoded row."""

# the architecture families the backbone configs name (llama-*, mistral-7b, qwen2.5-*)
ARCHS = {"llama": {"model_type": "llama", "tie_word_embeddings": False},
         "mistral": {"model_type": "mistral", "sliding_window": None,
                     "tie_word_embeddings": False},
         "qwen2": {"model_type": "qwen2", "use_sliding_window": False,
                   "tie_word_embeddings": True}}  # Qwen2.5-0.5B/1.5B tie their embeddings


def labelled_runs(tok, ids, labels, ignore_index: int = -100) -> list[str]:
    """The text of every maximal run of supervised tokens (specials kept); a supervised label
    must equal its input id (labels are not shifted in a row)."""
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab == ignore_index:
            if cur:
                runs.append(tok.decode(cur))
            cur = []
        else:
            assert lab == i
            cur.append(i)
    return runs + ([tok.decode(cur)] if cur else [])
