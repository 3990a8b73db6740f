"""Stage 2, model: build the student (backbone, quantization, LoRA), train it (the
LightningModule, strategies), export and reload it."""
