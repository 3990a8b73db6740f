"""The errors a user can fix: the command-line tools say them in one line, without a traceback
(`uniner.cli.entry`); any other exception is a bug and keeps its traceback."""


class UserError(Exception):
    """A mistake in the command line, the config or the input, said in one line that names the
    key, file or line to fix."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work (a wrong type, a missing file or model, a bad
    combination); the message starts with the key, e.g. `data.batch_size=abc: expected an
    integer`."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the config or the command line names does not exist (the message
    names the key or the path)."""
