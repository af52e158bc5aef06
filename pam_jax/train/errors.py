"""Errors the command line reports as one line, importable without orbax or jax."""
import sys


class CheckpointError(RuntimeError):
    """A missing, corrupt or mismatched checkpoint."""


# the user's errors (bad input, a missing or mismatched run): one line and exit code 2, no traceback
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ImportError, KeyError, CheckpointError,
               FloatingPointError)


def one_line(e: BaseException) -> str:
    """An error's message as one line (its first), or its type's name when it has none."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def script_main(prog: str, fn) -> int:
    """fn() -> its exit code, for a ``python -m`` entry point: the user's errors become one line
    on stderr and code 2, as `pam-jax` reports them."""
    try:
        return fn()
    except USER_ERRORS as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
