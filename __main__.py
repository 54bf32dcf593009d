"""`python -m spacetime`: see cli.py."""

import gc
import sys

from .cli import main

status = main()
gc.freeze()  # exit without collecting the finished run's objects one by one (the OS frees them at once)
sys.exit(status)
