"""Functions the retry and backup tests run on every backend. Imports nothing of wrencore (it
travels by value to Lambda sandboxes and fleet daemons); state between attempts lives in
marker files, which every backend's workers on this machine can see."""

import os
import signal
import time


def _first_time(marker):
    """True for the first caller only (``O_EXCL`` creation of the marker)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def killed_on_first_attempt(x, directory, victims=(0,)):
    """The first run of a call in ``victims`` SIGKILLs its own worker process mid-call."""
    if x in victims and _first_time(os.path.join(directory, f"killed-{x}")):
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


class FlakyError(Exception):
    pass


def raises_on_first_attempt(x, directory):
    """Raises FlakyError on its first run, returns on the next."""
    if _first_time(os.path.join(directory, f"raised-{x}")):
        raise FlakyError(f"first attempt of {x}")
    return x * 10


def always_raises(x):
    raise FlakyError(f"always {x}")


def straggles_once(x, directory, straggler=0, seconds=0.05):
    """Call ``straggler`` hangs on its first run until ``release`` exists, then returns
    ``"late"``; every other run (and the backup) returns ``x * 10`` after ``seconds``. The
    straggling run's process id is in ``straggler-pid``."""
    if x == straggler and _first_time(os.path.join(directory, "straggling")):
        with open(os.path.join(directory, "straggler-pid.tmp"), "w") as f:
            f.write(str(os.getpid()))
        os.rename(os.path.join(directory, "straggler-pid.tmp"),
                  os.path.join(directory, "straggler-pid"))
        release = os.path.join(directory, "release")
        while not os.path.exists(release):
            time.sleep(0.05)
        with open(os.path.join(directory, "late-done"), "w") as f:
            f.write(str(os.getpid()))
        return "late"
    time.sleep(seconds)
    return x * 10


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def killed_then_slow(x, directory, seconds):
    """The first run SIGKILLs its worker; the second says it started, then takes ``seconds``."""
    if _first_time(os.path.join(directory, f"killed-{x}")):
        os.kill(os.getpid(), signal.SIGKILL)
    open(os.path.join(directory, f"second-started-{x}"), "w").close()
    time.sleep(seconds)
    return x * 10
