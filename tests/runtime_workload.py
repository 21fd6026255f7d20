"""Functions whose imports the runtime tests detect. This module imports no third-party
package at its top: each function imports what it needs in its own body."""

import os
import sys


def yaml_and_msgpack(text):
    import msgpack
    import yaml

    from msgpack import _cmsgpack  # noqa: F401  the compiled extension must load

    return msgpack.unpackb(msgpack.packb(yaml.safe_load(text)))


def toolz_version(_=None):
    import toolz

    return toolz.__version__


def tabulate_version(_=None):
    import tabulate

    return tabulate.__version__


def imports_yaml(_=None):
    import yaml

    return yaml.__version__


def touch(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    return sys.executable


def plain(x):
    return x + 1


def import_dynamically(name):
    """An import detection cannot see: it works only if the environment has ``name``."""
    import importlib

    return importlib.import_module(name).__name__


def touch_with_toolz(path):
    import toolz  # noqa: F401

    return touch(path)
