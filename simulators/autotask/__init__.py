"""Autotask PSA REST simulator (python -m simulators.autotask --port 8602)."""
from .app import create_app

__all__ = ["create_app"]
