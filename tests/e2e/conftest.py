"""The end-to-end tests reuse the integration tests' real-server helpers (guard_servers,
serve_support): their folder is put on the import path here."""

from __future__ import annotations

import sys
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))
