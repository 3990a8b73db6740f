"""The command-line tools: each composes its Hydra config, calls the library, writes outputs.

Importing any of them first filters the third-party noise (`quiet`), before torch,
transformers, bitsandbytes, Lightning or W&B load.
"""

from uniner.cli.quiet import quiet

quiet()
