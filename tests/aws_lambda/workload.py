"""Functions the Lambda tests run. This module imports nothing of wrencore: it travels to the
sandbox in the job's module bundle, where only the deployment package is installed."""

import os
import signal
import time


def square(x):
    return x * x


class CustomError(Exception):
    pass


def fail_on(x, bad=3):
    if x == bad:
        raise CustomError(f"bad input {x}")
    return x


def echo_size(blob):
    return bytes(reversed(blob))


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def sleep_ignoring_alarm(seconds):
    """Sleeps through SIGALRM, so only the Lambda timeout (the harness's kill) stops it."""
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.05)
    return seconds


def runtime_marker(_):
    import wrencore_runtime

    return getattr(wrencore_runtime, "TEST_MARKER", None)


def environment(_):
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "WRENCORE_"))}


def print_and_log(x):
    """Prints and logs (through the standard logging module) before returning."""
    import logging
    import sys

    print(f"printed {x}")
    print(f"complained {x}", file=sys.stderr)
    logging.getLogger("workload").warning("logged %s", x)
    return x


def log_then_crash(x):
    """Log a line, then kill the sandbox: only CloudWatch keeps what the call logged."""
    import logging

    logging.getLogger("workload").warning("about to crash on %s", x)
    print(f"printed before crashing on {x}")
    time.sleep(0.3)
    os._exit(3)


def log_and_return(x):
    import logging

    logging.getLogger("workload").warning("logged for %s", x)
    print(f"printed for {x}")
    return x
