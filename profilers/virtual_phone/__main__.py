"""`python -m profilers.virtual_phone --port 5555`: serve virtual phones."""

from __future__ import annotations

import sys

from profilers.virtual_phone.cli import main

sys.exit(main())
