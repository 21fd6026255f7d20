"""wrencore's worker side: what runs on Lambda, on standalone instances and in local workers.

This package is shipped to workers, so it imports nothing of the client (``wrencore``) and
needs only the standard library and cloudpickle. Each backend's worker entry point is a thin
adapter over :class:`wrencore_runtime.runner.JobRunner`.
"""

PROTOCOL_VERSION = 1
