"""For ``faust -A pipelines.faust_app``: the app named by ``STREAMWISE_PIPELINE`` (transactions).

Importing this module builds an app from the environment, which is what ``faust -A``
needs; everything else uses :func:`pipelines.runtime.worker.build_app` with explicit settings.
"""

from __future__ import annotations

import os

from pipelines.runtime.worker import build_app
from pipelines.settings import Settings

app = build_app(Settings(), os.environ.get("STREAMWISE_PIPELINE", "transactions"))
