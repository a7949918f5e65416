"""The errors a user can fix. Each message says what is wrong and what to do; the command lines print it as
one `error:` line instead of a traceback."""


import sys
import warnings


def warnings_as_lines(emit=None):
    """Show a warning meant for the user (an export that spandrel cannot open, say) as one `warning: ...` line, through
    `emit` (default: stderr), instead of Python's `<our file>:<line>: UserWarning:` and a line of our source."""
    emit = emit or (lambda text: print(text, file=sys.stderr))
    warnings.showwarning = lambda message, *_, **__: emit(f"warning: {message}")


class JaxsrError(Exception):
    """Base of the user-facing errors."""


class ConfigError(JaxsrError, ValueError):
    """A config that cannot run; the message names the field and what to do. `field` (dotted) lets a command line
    point at the line of a config file that set it."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


class WeightsError(JaxsrError, ValueError):
    """A weights file that cannot be used as asked; the message says what was found and what to do."""


class DataError(JaxsrError, ValueError):
    """A dataset problem (missing folder, bad pairing, too few images); the message says what."""


class ImageError(JaxsrError, ValueError):
    """An image that cannot be read or written; the message names the file and the reason."""


class Diverged(JaxsrError, RuntimeError):
    """Too many consecutive non-finite training steps; the message says what to change."""
