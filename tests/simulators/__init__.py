# Without a tests/__init__.py, pytest's default "prepend" import mode imports this
# directory as the top-level package "simulators", shadowing the real one. Extending
# __path__ lets "from simulators import kit" still find /work/main/simulators/kit.py.
# Inert when this package is imported as tests.simulators.
import os as _os

if __name__ == "simulators":
    _real = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))), "simulators")
    if _real not in __path__:
        __path__.append(_real)
