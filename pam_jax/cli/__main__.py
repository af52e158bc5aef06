import sys

from pam_jax.cli.app import main

sys.exit(main())
