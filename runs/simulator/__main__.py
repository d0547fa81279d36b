"""``python -m runs.simulator --port 0``: run the simulator without Django."""

import sys

from runs.simulator.cli import main

sys.exit(main())
