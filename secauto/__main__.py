"""``python -m secauto`` is the ``secauto`` command."""

import sys

from secauto.cli import main

sys.exit(main())
