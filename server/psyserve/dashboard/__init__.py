"""The read-only web dashboard and /metrics: an ASGI app (Starlette) served by uvicorn in the server's event loop.

Owns the pages, their JSON/SSE feeds, the plot cache and the render process. Reads the service only
through its public methods; never changes experiment state.
"""

from .app import DashboardApp, DashboardServer, start_dashboard

__all__ = ["DashboardApp", "DashboardServer", "start_dashboard"]
