"""The ASGI entry point the Procfile names: ``uvicorn ingest.app:app``."""

from __future__ import annotations

import logging
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
if _settings.public_base_url is None:
    # `callrec dev` always sets it, so this is a deployment that forgot it.
    logging.getLogger("ingest").warning(
        "PUBLIC_BASE_URL is unset: Twilio signs each webhook with the URL it called, and "
        "behind a proxy or PaaS router this process sees another one, so every webhook "
        "would be answered 403; set PUBLIC_BASE_URL to the https:// URL Twilio calls"
    )
app = create_app(_settings)
