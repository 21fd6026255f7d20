"""wrencore's worker side: what runs on Lambda, on standalone instances and in local workers.

This package is shipped to workers, so it imports nothing of the client (``wrencore``) and
needs only the standard library and cloudpickle. Each backend's worker entry point is a thin
adapter over :class:`wrencore_runtime.runner.JobRunner`.
"""

PROTOCOL_VERSION = 1


def spec_class(spec):
    """The object a spec's ``"class"`` names (``"module:Qual.Name"``), imported: how storages,
    queues, key sources and completion senders travel to workers."""
    import importlib

    module_name, _, qualname = spec["class"].partition(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
