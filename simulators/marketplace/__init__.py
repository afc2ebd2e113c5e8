"""Simulator of the Ingram Micro Cloud Marketplace API (see simulators/README.md)."""
from .app import create_app

__all__ = ["create_app"]
