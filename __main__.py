"""`python -m spacetime`: see cli.py."""

import gc

from .cli import exit_with, main

status = main()
gc.freeze()  # exit without collecting the finished run's objects one by one (the OS frees them at once)
exit_with(status)
