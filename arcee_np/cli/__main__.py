"""``python -m arcee_np.cli ...``: the same as ``arcee-np ...``."""

import sys

from .app import main

sys.exit(main())
