"""The extension surface of wrencore: every hook a plugin can implement.

Hooks are grouped by the five concerns of the design — invoke, queue, storage, logging,
instance lifecycle — plus configuration, trust and the command line. Hooks are always
called with keyword arguments, so a spec grows by adding arguments and old plugins keep
working.

Registration hooks hand the plugin a ``register`` callback::

    register(name, target, *, requires=(), install=None, description="")

``target`` is an import path (``"package.module:Class"``) loaded on first use, or the
object itself. ``requires`` names the modules it needs (``("boto3",)``) and ``install``
the command that provides them (``"pip install 'wrencore[aws]'"``), so choosing a
backend whose SDK is missing tells the user what to install instead of failing on import.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional

import pluggy

if TYPE_CHECKING:
    import click

    from .config import Config
    from .futures import Future

hookspec = pluggy.HookspecMarker("wrencore")

#: The ``register`` callback that registration hooks receive.
Register = Callable[..., None]


# ------------------------------------------------------------------------------------
# invoke
# ------------------------------------------------------------------------------------


@hookspec
def wrencore_register_backends(register: Register) -> None:
    """Register compute backends, selected by ``backend=`` name.

    Called once, when the registry is first built. A backend target is a subclass of
    :class:`wrencore.backends.Backend`, constructed with ``(config, storage)``.

    :param register: ``register(name, target, *, requires=(), install=None, description="")``.
    """


@hookspec
def wrencore_before_invoke(backend: str, job: Dict[str, Any], call_ids: List[str]) -> None:
    """Notification, on the user's computer, just before calls are handed to a backend.

    :param backend: the backend's registered name.
    :param job: the job header of the task message (see ``wrencore_runtime.protocol``).
    :param call_ids: the ids of the calls about to be invoked.
    """


# ------------------------------------------------------------------------------------
# queue
# ------------------------------------------------------------------------------------


@hookspec
def wrencore_register_queues(register: Register) -> None:
    """Register task queues, selected by ``queue=`` name in backends that pull work.

    A queue target is a subclass of :class:`wrencore_runtime.queues.TaskQueue`,
    constructed with its configuration section as keyword arguments.

    :param register: ``register(name, target, *, requires=(), install=None, description="")``.
    """


# ------------------------------------------------------------------------------------
# storage
# ------------------------------------------------------------------------------------


@hookspec
def wrencore_register_storages(register: Register) -> None:
    """Register storages, selected by ``storage=`` name.

    A storage target is a callable ``(config_section: Mapping) ->``
    :class:`wrencore_runtime.storage.Storage`; the storage must be rebuildable on a worker
    from its ``to_spec()``.

    :param register: ``register(name, target, *, requires=(), install=None, description="")``.
    """


# ------------------------------------------------------------------------------------
# logging
# ------------------------------------------------------------------------------------


@hookspec
def wrencore_worker_log_handlers(
    component: str, instance_id: str, process_name: str, config: Mapping[str, Any]
) -> Optional[List[logging.Handler]]:
    """Provide log handlers for a long-running worker process (e.g. the standalone daemon).

    Every implementation's handlers are attached; the library itself never configures
    logging on the user's computer.

    :param component: which worker is asking, e.g. ``"standalone-daemon"``.
    :param instance_id: the id of the machine the worker runs on.
    :param process_name: the worker process's name on that machine.
    :param config: the worker's configuration section.
    :returns: handlers to attach to the ``wrencore`` and ``wrencore_runtime`` loggers, or None.
    """


@hookspec
def wrencore_call_finished(future: "Future", metadata: Dict[str, Any]) -> None:
    """Notification, on the user's computer, when a call's future is completed.

    :param future: the completed :class:`wrencore.Future`.
    :param metadata: the call's metadata (``host_…`` and ``worker_…`` keys).
    """


@hookspec(firstresult=True)
def wrencore_call_logs(backend: str, config: "Config", job_id: str,
                       call_id: str) -> Optional[List[str]]:
    """Fetch what a call logged from where its backend's workers ship their logs.

    Used by :meth:`wrencore.Future.logs` when the call's status carried no output (its
    worker crashed or was killed) or when asked with ``source="cloud"``, and by
    ``wrencore logs JOB CALL``. An implementation answers for the backend it serves (e.g.
    CloudWatch Logs for ``aws_lambda`` and ``aws_sqs_ec2``) and returns None for others.
    Reads are bounded: a few pages at most. Stops at first non-None result.

    :param backend: the backend the call ran on (e.g. ``"aws_lambda"``).
    :param config: the effective :class:`wrencore.config.Config`.
    :param job_id: the call's job.
    :param call_id: the call's id within its job.
    :returns: the call's log lines, oldest first (``[]`` when none are found), or None
        when this implementation does not serve ``backend``.
    """


# ------------------------------------------------------------------------------------
# instance lifecycle
# ------------------------------------------------------------------------------------


@hookspec
def wrencore_register_instance_providers(register: Register) -> None:
    """Register providers of worker instances (launch, list, terminate).

    A provider target is a class constructed with ``(config)``; see
    :class:`wrencore.backends.InstanceProvider`.

    :param register: ``register(name, target, *, requires=(), install=None, description="")``.
    """


@hookspec(firstresult=True)
def wrencore_instance_id(config: Mapping[str, Any]) -> Optional[str]:
    """Find the id of the machine a worker process runs on.

    Stops at first non-None result.

    :param config: the worker's configuration section.
    :returns: the instance id, or None to let the next implementation try.
    """


@hookspec(firstresult=True)
def wrencore_release_instance(instance_id: str, config: Mapping[str, Any]) -> Optional[bool]:
    """Give up the machine whose workers have all been idle for their idle timeout.

    Called by the worker daemon that won the instance's idle decision, before its workers
    exit. A provider plugin releases what it launched (terminate this EC2 instance, delete
    it from its managed instance group) or keeps it (its fleet would fall below
    ``min_instances``); the built-in default, for a machine no provider launched, releases
    nothing and lets the workers exit. Stops at first non-None result.

    :param instance_id: the id of the machine (as ``wrencore_instance_id`` found it).
    :param config: the worker's settings (``provider`` names the plugin that launched it).
    :returns: True when the machine is released (the workers exit), False to keep it
        running and idle, None to let the next implementation decide.
    """


# ------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------


@hookspec
def wrencore_register_settings(register: Register) -> None:
    """Declare the configuration tables and keys a plugin reads.

    Called once, when a configuration is first checked. Every source (config file,
    ``WRENCORE_…`` variables, keyword config) is checked against the declarations: an
    undeclared table or key, or a value of the wrong type or range, is an error naming
    its source. The configuration reference is generated from them. Two plugins may
    declare keys of the same table (a backend and a queue both named ``local``).

    :param register: ``register(table, settings, *, doc="", open=False)``: ``table`` is
        the table's name; ``settings`` a list of :class:`wrencore.settings.Setting`
        (name, type, default, doc, bounds); ``doc`` describes the table; ``open=True``
        lets keys beyond the declared ones through unchecked.
    """


# ------------------------------------------------------------------------------------
# trust
# ------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def wrencore_task_key_source(backend: str, config: "Config") -> Optional[Any]:
    """The key source a backend's clients sign task messages with, as a client reaches it.

    Used by ``wrencore keys show`` and ``wrencore keys rotate``. An implementation answers
    for the backend it serves (an SSM parameter for the AWS backends, a key file for
    ``queue``) and returns None for others. Stops at first non-None result.

    :param backend: the backend whose key is wanted (e.g. ``"aws_lambda"``).
    :param config: the effective :class:`wrencore.config.Config`.
    :returns: a :class:`wrencore_runtime.auth.KeySource`, or None when this
        implementation does not serve ``backend``.
    """


# ------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------


@hookspec
def wrencore_check_config(backend: str, config: "Config", report: Callable[..., None]) -> None:
    """Verify, for ``wrencore config check``, what a backend needs to run.

    Each implementation checks what it knows for the backend it serves (and does nothing
    for others): credentials, region, bucket, queue, deployed function, permissions. Checks
    must only read: they create nothing.

    :param backend: the backend being checked (e.g. ``"aws_lambda"``).
    :param config: the effective :class:`wrencore.config.Config`.
    :param report: ``report(what, ok, detail="")`` for each check; ``detail`` says exactly
        what is missing and how to provide it.
    """


@hookspec
def wrencore_register_commands(cli: "click.Group") -> None:
    """Add commands to the ``wrencore`` command line.

    Add a command or a group of commands with ``cli.add_command(...)``. A command returns
    an exit code (or None for 0); an error a user can fix is raised as a
    :class:`wrencore.WrenError` (or a cloud SDK's credentials, region or permission error),
    which the command line prints as one line ``wrencore: error: …`` with exit code 1.

    :param cli: the top-level :class:`click.Group` of the ``wrencore`` command.
    """
