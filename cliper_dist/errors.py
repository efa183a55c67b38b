"""The one exception type a user should see: bad input, reported as one clear line."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


class UserError(Exception):
    """Bad input, config or environment. Launchers print it as one line, without a traceback."""


def error_line(e: UserError) -> str:
    """How every launcher and tool reports a ``UserError``."""
    return f"cliper-dist: error: {e}"


def as_user_error(e: BaseException) -> UserError | None:
    """``e`` as the user should see it: a ``UserError`` as is, a failed file operation on a
    named path (a missing directory, permissions, a full disk: the environment, not a bug)
    as one line naming the path; None for anything else, which stays a traceback."""
    if isinstance(e, UserError):
        return e
    if isinstance(e, OSError) and e.filename is not None:
        return UserError(f"cannot use {e.filename}: {e.strerror or e}")
    return None


def run_tool(main: Callable[..., int | None], *args) -> int:
    """A single-process tool's exit code: ``main``'s, or 2 after one line for a user error
    (``as_user_error``). Scripts end with ``sys.exit(run_tool(main))``."""
    try:
        return main(*args) or 0
    except (UserError, OSError) as e:
        user = as_user_error(e)
        if user is None:
            raise
        print(error_line(user), file=sys.stderr, flush=True)
        return 2


@contextmanager
def writing(flag: str, path: object) -> Iterator[None]:
    """An output that cannot be written (missing parent, permissions, full disk) is bad
    environment, not a bug: one line naming the flag instead of a traceback."""
    try:
        yield
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write ({e.strerror or e})") from None
