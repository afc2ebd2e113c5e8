"""ConnectWise Manage REST simulator (see simulators/README.md, section ConnectWise)."""
from .app import create_app

__all__ = ["create_app"]
