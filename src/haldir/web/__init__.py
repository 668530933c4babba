"""The dashboard: server-rendered pages for a tenant's operators, served at `/ui` by the API server."""

from haldir.web.app import PATH as DASHBOARD_PATH
from haldir.web.app import mount_dashboard

__all__ = ["DASHBOARD_PATH", "mount_dashboard"]
