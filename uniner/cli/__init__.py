"""The command-line tools: each composes its Hydra config, calls the library, writes outputs."""
