"""Stage 0, distillation: raw text -> passages annotated by a teacher LLM (chunking of documents
into passages, the teacher client and its cache, answer parsing and grounding)."""
