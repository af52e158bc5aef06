"""python -m pam_jax.annotate --data DIR (the same as `pam-jax annotate`)."""
import argparse
import sys

from . import add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="pam-jax annotate", description="Rank candidate actions in a browser (human preference labels).")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
