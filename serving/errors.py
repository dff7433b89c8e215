"""Errors the runtime, the command line and the HTTP server report without a traceback."""

from __future__ import annotations

import re

__all__ = ["ExportError", "RequestError", "ServingError", "first_line", "flag_name", "spell_as_flags"]


def flag_name(field: str) -> str:
    """The command-line flag of an argument: `beam_size` -> `--beam-size`."""
    return "--" + field.replace("_", "-")


def spell_as_flags(message: str, fields: tuple[str, ...]) -> str:
    """`message` with each of `fields` written as its flag (a library names its arguments, a command
    line its options). Longer names first, so `validation_src` is not caught as `src`."""
    for name in sorted(fields, key=len, reverse=True):
        message = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", flag_name(name), message)
    return message


class ServingError(Exception):
    """A problem the user can fix, described in one line (the CLI prints it and exits with status 2)."""

    def __init__(self, message: str) -> None:
        # One line even when a caller interpolates a multi-line value (an onnxruntime message).
        super().__init__(" ".join(str(message).split()))

    # The arguments the message names (set by a subclass that knows them, e.g. `OptionError`).
    fields: tuple[str, ...] = ()

    def for_flags(self) -> str:
        """The message as a command line prints it: the named arguments spelled as flags."""
        return spell_as_flags(str(self), self.fields)


class ExportError(ServingError):
    """The export directory is missing, incomplete, corrupt or of an unknown format."""


class RequestError(ServingError):
    """Inputs or decoding options that cannot be served; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of `error`'s message, at most `limit` characters (its type name when empty): what
    a one-line message quotes of a library's multi-line exception."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
