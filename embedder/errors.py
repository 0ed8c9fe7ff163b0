"""One exception type for everything a user can get wrong.

The command line prints `EmbedderError` as a single line and exits non-zero; anything else is
a bug and keeps its traceback. So every message must name the file (and line, record or byte
offset) and say what is wrong in words a user can act on.
"""


class EmbedderError(Exception):
    """A problem with the user's input, files or options (not a bug in embedder)."""
