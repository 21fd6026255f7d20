"""The ``wrencore`` command line, built on click.

Plugins add commands through the ``wrencore_register_commands`` hook, which hands them the
top-level :class:`click.Group`. Exit codes: 0 success, 1 an error (one line on stderr,
``wrencore: error: …``), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict, List, Optional

import click

from .errors import WrenError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("wrencore")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(_version(), "-V", "--version", prog_name="wrencore",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """Run Python functions on local processes, AWS Lambda, EC2 fleets or Pub/Sub workers.

    Start with `wrencore hello` (a tiny job, timed step by step), `wrencore config show`
    (the effective configuration and where each value came from) and `wrencore plugins`
    (the backends, storages and queues installed). Docs: docs/index.md.
    """


# -- demo, hello, plugins ----------------------------------------------------------------

@cli.command()
@click.option("--backend", default=None, metavar="NAME", help="backend (default: config)")
@click.option("--calls", type=click.IntRange(min=1), default=20, show_default=True,
              help="how many calls")
def demo(backend: Optional[str], calls: int) -> None:
    """Run a small map (prime counting) and say where it ran."""
    import wrencore
    from wrencore import demo as demo_module

    start = time.time()
    with wrencore.Executor(backend=backend) as executor:
        results = wrencore.get_all_results(_map_by_value(executor, demo_module.count_primes,
                                                         range(calls)))
    elapsed = time.time() - start
    pids = {r["worker_pid"] for r in results}
    for r in results[:3]:
        click.echo(f"  primes below {r['primes_below']}: {r['count']}")
    click.echo(f"ran {len(results)} calls on backend {executor.backend_name!r} "
               f"in {len(pids)} worker processes, {elapsed:.2f} s")


def _map_by_value(executor: Any, fn: Any, items: Any) -> List[Any]:
    import cloudpickle

    from wrencore import demo as demo_module

    # By value: a worker has wrencore's runtime, not this client package.
    cloudpickle.register_pickle_by_value(demo_module)
    try:
        return executor.map_futures(fn, items)
    finally:
        cloudpickle.unregister_pickle_by_value(demo_module)


@cli.command()
@click.option("--backend", default=None, metavar="NAME", help="backend (default: config)")
def hello(backend: Optional[str]) -> None:
    """Run a tiny job end to end and report each step's time.

    The steps: read the configuration, create the executor (backend and storage), run one
    call (the first call on a cloud also deploys or starts what it needs), run ten calls,
    shut down. A failing step is named with what to do.
    """
    import wrencore
    from wrencore import demo as demo_module
    from wrencore.config import Config

    steps: List[tuple] = []

    def step(name: str, action: Any) -> Any:
        start = time.perf_counter()
        click.echo(f"  {name} …", nl=False)
        try:
            value = action()
        except BaseException:
            click.echo(" failed")
            raise
        elapsed = time.perf_counter() - start
        steps.append((name, elapsed))
        click.echo(f" {elapsed:.2f} s")
        return value

    config = step("read the configuration", lambda: Config(
        {"backend": backend} if backend else None))
    name = str(config.get("backend") or "local")
    click.echo(f"backend {name!r}, configuration {config.path or '(no file)'}")
    executor = step("create the executor", lambda: wrencore.Executor(backend=backend))
    try:
        first = step("run one call", lambda: _map_by_value(
            executor, demo_module.count_primes, [1])[0].result())
        results = step("run ten calls", lambda: wrencore.get_all_results(_map_by_value(
            executor, demo_module.count_primes, range(10))))
    finally:
        step("shut down", executor.shutdown)
    if first["count"] != 303 or len(results) != 10:
        raise WrenError(f"wrong results from backend {name!r}: {first!r}, {len(results)} of 10")
    click.echo(f"hello from {name!r}: {len(results) + 1} calls in "
               f"{sum(t for _, t in steps):.2f} s")


@cli.command()
def plugins() -> None:
    """List plugins and the backends, storages and queues they register."""
    from .plugins import CONCERNS, get_plugin_manager, get_registry

    pm = get_plugin_manager()
    registry = get_registry()
    click.echo("plugins: " + ", ".join(sorted(n for n, _ in pm.list_name_plugin() if n)))
    for concern in CONCERNS:
        for name in registry.names(concern):
            entry = registry.get(concern, name)
            note = f"  (needs: {entry.install})" if entry.missing_modules() else ""
            click.echo(f"{concern:18} {name:14} [{entry.plugin}] {entry.description}{note}")


@cli.command()
@click.argument("job")
@click.option("-o", "--output", default=None, help="The PNG file (default: JOB.png).")
@click.option("--backend", default=None, help="The backend whose storage holds the job.")
@click.option("--storage", default=None, help="The storage that holds the job.")
def plot(job: str, output: Optional[str], backend: Optional[str],
         storage: Optional[str]) -> None:
    """Save a timeline and a duration histogram of a job as PNG (needs wrencore[plot])."""
    from .plot import plot_command

    plot_command(job, output, backend, storage)


# -- building the command tree ----------------------------------------------------------

_built = False


def build_cli() -> click.Group:
    """The command tree, with the plugins' commands added (once)."""
    global _built
    if not _built:
        from . import config_cli, jobs_cli, keys_cli, runtime_cli
        from .plugins import get_plugin_manager

        for module in (config_cli, jobs_cli, keys_cli, runtime_cli):
            module.add_commands(cli)
        get_plugin_manager().hook.wrencore_register_commands(cli=cli)
        _built = True
    return cli


# -- errors as one line ------------------------------------------------------------------

AWS_CREDENTIALS_HELP = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or "
                        "run `aws configure`; see docs/aws.md")


def describe_error(exc: BaseException) -> Optional[str]:
    """One line for an error a user can fix, or None for a bug (shown with its traceback)."""
    if isinstance(exc, WrenError):
        return str(exc)
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc}"
    if module.startswith(("botocore", "boto3")):
        return _aws_error(exc, name)
    if module.startswith("google.auth") and name == "DefaultCredentialsError":
        return ("no Google Cloud credentials: run `gcloud auth application-default login` or "
                "set GOOGLE_APPLICATION_CREDENTIALS; see docs/gcp.md")
    if module.startswith("google.api_core"):
        return f"Google Cloud: {exc}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        fix = {"boto3": "pip install 'wrencore[aws]'", "botocore": "pip install 'wrencore[aws]'",
               "google": "pip install 'wrencore[gcp]'",
               "supervisor": "pip install 'wrencore[standalone]'"}.get(top)
        if fix:
            return f"{exc.name} is not installed; run: {fix}"
    return None


def _aws_error(exc: BaseException, name: str) -> str:
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return f"no AWS credentials found: {AWS_CREDENTIALS_HELP}"
    if name == "NoRegionError":
        return ("no AWS region: set AWS_DEFAULT_REGION (e.g. export AWS_DEFAULT_REGION=us-east-1), a region "
                "in ~/.aws/config, or region in the backend's config table; see docs/aws.md")
    if name == "ProfileNotFound":
        return f"{exc}; check AWS_PROFILE and ~/.aws/config"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
        return f"cannot reach AWS: {exc}; check the region and the network"
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "") or exc)
    operation = getattr(exc, "operation_name", "") or "the request"
    if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and "Bucket" in operation):
        bucket = error.get("BucketName") or ""
        return (f"the S3 bucket {bucket or 'configured in [s3] bucket'} does not exist: "
                f"create it (aws s3 mb s3://NAME) or fix [s3] bucket")
    if code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                "InvalidAccessKeyId", "AuthFailure"):
        return f"AWS rejected the credentials ({code}): {AWS_CREDENTIALS_HELP}"
    if code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
        return "the AWS session token has expired: renew it (e.g. aws sso login)"
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                "AuthorizationError", "403", "Forbidden"):
        return (f"permission denied for {operation} ({code}): {message}; the IAM policy the "
                f"user needs is in docs/aws.md")
    return f"AWS {operation} failed ({code or name}): {message}"


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    group = build_cli()
    try:
        result = group.main(args=argv, prog_name="wrencore", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        if exc.ctx is not None and type(exc).__name__ == "NoArgsIsHelpError":
            click.echo(exc.ctx.get_help(), err=True)
        else:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"wrencore: error: {exc.format_message()}{where}", err=True)
        return 2
    except click.ClickException as exc:  # click's own errors (exit code 1)
        click.echo(f"wrencore: error: {exc.format_message()}", err=True)
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("wrencore: interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("wrencore: interrupted", err=True)
        return 130
    except Exception as exc:
        line = describe_error(exc)
        if line is None:
            raise
        click.echo(f"wrencore: error: {line}", err=True)
        return 1
    return int(result or 0) if isinstance(result, int) else 0


def fail(message: str) -> "click.exceptions.Exit":
    """Print ``wrencore: error: message`` and return an exit with code 1, to raise."""
    click.echo(f"wrencore: error: {message}", err=True)
    return click.exceptions.Exit(1)


def json_option(value: Optional[str]) -> Optional[Dict[str, Any]]:
    """A ``--config JSON`` value as a dict; a usage error naming the problem if not."""
    if not value:
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--config") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"local\": {\"workers\": 2}}'",
                                 param_hint="--config")
    return data


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
