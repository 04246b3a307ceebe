"""The one exception type a user's mistake raises.

The CLI turns a ScratchError into a single line on stderr and a non-zero exit, never a traceback:
the message must say what is wrong and how to fix it.
"""


class ScratchError(Exception):
    """A user-facing error: bad input, bad config, a run directory that does not fit."""
