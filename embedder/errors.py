"""One exception type for everything a user can get wrong.

The command line prints `EmbedderError` as a single line and exits non-zero; anything else is
a bug and keeps its traceback. So every message must name the file (and line, record or byte
offset) and say what is wrong in words a user can act on. It is a `ValueError`, so callers that
follow scikit-learn's convention (bad input raises ValueError) catch it without knowing embedder.
"""


class EmbedderError(ValueError):
    """A problem with the user's input, files or options (not a bug in embedder)."""


def check_text(text: str, what: str) -> None:
    """Fail with one line when a text a command was given is empty or only whitespace: its
    neighbours or its reply would be an answer to nothing."""
    if not text.strip():
        raise EmbedderError(f"{what} is empty")


def check_range(option: str, value: float, low: float | None = None, high: float | None = None,
                *, open_low: bool = False, open_high: bool = False) -> None:
    """Fail with one line naming the option when `value` is outside [low, high] (or an open end)."""
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if not (too_low or too_high):
        return
    if low is not None and high is not None:
        lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
        raise EmbedderError(f"{option} {value}: must lie in {lo}{low}, {high}{hi}")
    if too_low:
        raise EmbedderError(f"{option} {value}: must be {'above' if open_low else 'at least'} {low}")
    raise EmbedderError(f"{option} {value}: must be {'below' if open_high else 'at most'} {high}")
