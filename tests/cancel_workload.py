"""Functions the cancellation tests run on cloud backends. Imports nothing of wrencore (it
travels by value to Lambda sandboxes and fleet daemons); what a call did is left in marker
files, which every backend's workers on this machine can see."""

import os
import time


def started_then_held(x, directory, hold=(0,)):
    """Record that call ``x`` started (the file ``started-{x}`` holds this process's id); a
    call in ``hold`` then waits until the file ``release`` exists. Returns ``x``."""
    path = os.path.join(directory, f"started-{x}")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    if x in hold:
        while not os.path.exists(os.path.join(directory, "release")):
            time.sleep(0.05)
    return x


def started(directory):
    """The calls that started, as ``{x: pid}``."""
    found = {}
    for name in os.listdir(directory):
        if name.startswith("started-") and not name.endswith(".tmp"):
            with open(os.path.join(directory, name)) as f:
                found[int(name[len("started-"):])] = int(f.read())
    return found
