"""python -m pam_jax.annotate --data DIR (the same as `pam-jax annotate`)."""
import argparse
import sys

from pam_jax.train.errors import script_main

from . import add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="pam-jax annotate", description="Rank candidate actions in a browser (human preference labels).")
    add_arguments(parser)
    return script_main("pam-jax", lambda: run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
