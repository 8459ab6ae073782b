"""The ASGI entry point the Procfile names: ``uvicorn ingest.app:app``."""

from __future__ import annotations

import sys

from config.logging import configure_logging
from config.settings import WEB_REQUIRED, SettingsError, load_settings
from ingest.factory import create_app

try:
    _settings = load_settings(require=WEB_REQUIRED)
except SettingsError as exc:
    print(f"callrec web: {exc}", file=sys.stderr)
    sys.exit(2)

configure_logging(_settings.log_format)
app = create_app(_settings)
