"""``python -m benchmarks`` (what scripts/bench runs)."""

import sys

from benchmarks.bench import main

sys.exit(main())
