"""python -m pam_jax.annotate --data DIR (the same as `pam-jax annotate`)."""
import argparse
import sys

from . import add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="pam-jax annotate", description="Rank candidate actions in a browser (human preference labels).")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except (ValueError, ImportError) as e:    # the user's input: one line, code 2 (as `pam-jax`)
        print(f"pam-jax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
