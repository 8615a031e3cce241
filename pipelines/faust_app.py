"""For ``faust -A pipelines.faust_app``: the app named by ``STREAMWISE_PIPELINE`` (transactions).

Importing this module builds an app from the environment, which is what ``faust -A``
needs; everything else uses :func:`pipelines.worker.build_app` with explicit settings.
"""

from __future__ import annotations

import os

from pipelines.settings import Settings
from pipelines.worker import build_app

app = build_app(Settings(), os.environ.get("STREAMWISE_PIPELINE", "transactions"))
