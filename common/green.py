"""Make the process green before anything opens a socket, and prove it.

Plain psycopg2 blocks the whole eventlet hub while a query runs; with psycogreen's wait
callback it yields. A service that finds no wait callback refuses to start.
"""
import eventlet

eventlet.monkey_patch()

import psycopg2.extensions  # noqa: E402
from psycogreen.eventlet import patch_psycopg  # noqa: E402


class NotGreen(RuntimeError):
    pass


def make_green():
    if psycopg2.extensions.get_wait_callback() is None:
        patch_psycopg()
    assert_green()


def assert_green():
    if psycopg2.extensions.get_wait_callback() is None:
        raise NotGreen("psycopg2 has no eventlet wait callback: queries would block the hub")
    import socket

    if not eventlet.patcher.is_monkey_patched(socket):
        raise NotGreen("socket is not monkey-patched by eventlet")
