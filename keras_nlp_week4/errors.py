"""Errors that the command line reports to the user without a traceback."""

from __future__ import annotations

from serving.errors import spell_as_flags

__all__ = ["UserError"]


class UserError(Exception):
    """An error caused by the user's input: a bad path, bad data or an unknown name.

    The message is a single line that says what is wrong and how to fix it. The command line
    prints it without a traceback and exits with status 2, so raise it only for problems the
    user can fix; programming errors should stay ordinary exceptions.

    Args:
        message: one line, e.g. ``"tokenizer model 'x.model' not found; train one with ..."``.
        fields: the arguments the message names (e.g. ``("src", "tgt")``), which a command line shows
            as its flags (`for_flags`).

    Example:

    >>> try:
    ...     raise UserError("dataset is empty; pass a file with at least one line")
    ... except UserError as error:
    ...     print(error)
    dataset is empty; pass a file with at least one line
    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        # Keep the one-line promise even when a caller interpolates a multi-line value.
        super().__init__(" ".join(str(message).split()))
        self.fields = tuple(fields)

    def for_flags(self) -> str:
        """The message with each named field (`fields`) spelled as its command-line flag."""
        return spell_as_flags(str(self), self.fields)
