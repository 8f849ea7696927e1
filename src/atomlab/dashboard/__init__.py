"""The web dashboard over the data home (docs/dashboard.md): ``atomlab dashboard``.

Needs the ``dashboard`` extra (FastAPI, uvicorn, sse-starlette, plotly)::

    from atomlab.dashboard import create_app, from_settings
    app = create_app(from_settings(load_settings().settings))   # serve with uvicorn

Read-only: every route is a GET, every store is opened read-only.
"""

from atomlab.dashboard.app import create_app
from atomlab.dashboard.config import DashboardConfig, check_host, from_settings, is_loopback

__all__ = ["DashboardConfig", "check_host", "create_app", "from_settings", "is_loopback"]
