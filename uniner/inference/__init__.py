"""Stage 3, inference: answer (text, type) queries fast (the shared-prefix engine) and turn the
answers into entities with character offsets (`Extractor`)."""
