"""`python -m toolchain` is `snntc`."""
import sys

from .cli import main

sys.exit(main())
