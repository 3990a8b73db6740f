"""Stage 0, distillation: raw text -> passages annotated by a teacher LLM (client, cache, answer
parsing)."""
