"""``wrencore lambda …``: build, deploy, inspect, list and delete wrencore's Lambda functions."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Tuple

import click


def add_commands(cli: click.Group) -> None:
    cli.add_command(lambda_group)


@click.group("lambda")
def lambda_group() -> None:
    """Build, deploy, list and delete the AWS Lambda functions of the aws_lambda backend.

    Each runtime (the client's wrencore package and a job's distributions) gets its own
    function and execution role; `wrencore lambda list` shows them and `wrencore lambda
    delete` removes them with their roles.
    """


def _settings():
    from wrencore.config import Config
    from wrencore_aws.clients import require_region_and_credentials

    from .deploy import LambdaSettings

    settings = LambdaSettings.from_config(Config())
    require_region_and_credentials(settings.client_section)
    return settings


def _deployer():
    from wrencore.config import Config
    from wrencore.plugins import get_registry

    from .deploy import Deployer, LambdaSettings

    from wrencore_aws.clients import require_region_and_credentials

    config = Config()
    settings = LambdaSettings.from_config(config)
    require_region_and_credentials(settings.client_section)
    storage_name = str(config.get("storage") or "s3")
    storage = get_registry().load("storage", storage_name)(config.section(storage_name))
    return Deployer(settings, storage)


@lambda_group.command()
def deploy() -> None:
    """Create or update the function of this client's runtime (idempotent).

    The storage bucket is checked first: the function is useless without it.
    """
    deployer = _deployer()
    require_bucket(deployer.storage)
    deployed = deployer.deploy()
    click.echo(json.dumps(asdict(deployed), indent=2))


@lambda_group.command()
def status() -> int:
    """Show this client's deployed function; exit code 1 if it is not deployed."""
    deployer = _deployer()
    deployed = deployer.describe()
    if deployed is None:
        click.echo(f"Lambda function {deployer.function_name} is not deployed", err=True)
        return 1
    click.echo(json.dumps(dict(asdict(deployed), matches_client=(
        deployed.runtime_hash == deployer.package.sha256)), indent=2))
    return 0


@lambda_group.command()
@click.argument("output", type=click.Path(dir_okay=False, writable=True))
def build(output: str) -> None:
    """Write the deployment zip to OUTPUT."""
    from .package import build_package

    package = build_package()
    with open(output, "wb") as f:
        f.write(package.zip_bytes)
    click.echo(f"{output}: {len(package.zip_bytes)} bytes, runtime {package.sha256}")


def require_bucket(storage: Any) -> None:
    """WrenError naming the bucket if it does not exist (or cannot be seen)."""
    from wrencore.errors import ConfigError

    try:
        storage.client.head_bucket(Bucket=storage.bucket)
    except Exception as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ConfigError(f"the S3 bucket {storage.bucket!r} of [s3] bucket does not exist: "
                              f"create it (aws s3 mb s3://{storage.bucket}) or fix [s3] "
                              f"bucket") from None
        raise


def wrencore_functions(client: Any, prefix: str) -> List[Dict[str, Any]]:
    """wrencore's functions (named ``{prefix}-…`` and carrying its runtime variables)."""
    found = []
    for page in client.get_paginator("list_functions").paginate():
        for fn in page["Functions"]:
            variables = (fn.get("Environment") or {}).get("Variables") or {}
            if fn["FunctionName"].startswith(f"{prefix}-") and \
                    "WRENCORE_RUNTIME_HASH" in variables:
                found.append({"name": fn["FunctionName"], "role": fn.get("Role", ""),
                              "runtime_hash": variables.get("WRENCORE_RUNTIME_HASH", ""),
                              "environment_hash": variables.get("WRENCORE_ENVIRONMENT_HASH",
                                                                ""),
                              "memory": fn.get("MemorySize"), "timeout": fn.get("Timeout"),
                              "last_modified": fn.get("LastModified", ""),
                              "layers": [layer["Arn"] for layer in fn.get("Layers") or []]})
    return sorted(found, key=lambda f: f["last_modified"], reverse=True)


@lambda_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def list_(as_json: bool) -> None:
    """List wrencore's functions, newest first; `current` marks this client's runtime."""
    from wrencore_aws.clients import make_client

    from .package import build_package

    settings = _settings()
    functions = wrencore_functions(make_client("lambda", settings.client_section),
                                   settings.name_prefix)
    current = build_package().sha256
    for fn in functions:
        fn["current"] = fn["runtime_hash"] == current
    if as_json:
        click.echo(json.dumps(functions, indent=2))
        return
    if not functions:
        click.echo("no wrencore Lambda functions")
        return
    click.echo(f"{'FUNCTION':<40} {'MEMORY':>6} {'TIMEOUT':>7} {'MODIFIED':<29} RUNTIME")
    for fn in functions:
        click.echo(f"{fn['name']:<40} {fn['memory']:>6} {fn['timeout']:>7} "
                   f"{fn['last_modified']:<29} {fn['runtime_hash'][:12]}"
                   f"{' (current)' if fn['current'] else ''}")


@lambda_group.command()
@click.argument("names", nargs=-1, metavar="[FUNCTION]...")
@click.option("--all", "all_functions", is_flag=True, help="every wrencore function")
@click.option("--stale", is_flag=True, help="every function not of this client's runtime")
@click.option("--keep-roles", is_flag=True, help="leave the execution roles")
@click.option("--keep-layers", is_flag=True, help="leave the runtime layers")
def delete(names: List[str], all_functions: bool, stale: bool, keep_roles: bool,
           keep_layers: bool) -> None:
    """Delete wrencore's functions, the execution roles wrencore created for them, and the
    runtime layers (wrencore-py…) that no remaining function uses.

    Name functions, or pass --all or --stale. A role given in [aws_lambda] role_arn is
    never deleted.
    """
    from wrencore.errors import WrenError
    from wrencore_aws.clients import make_client

    if sum(map(bool, (names, all_functions, stale))) != 1:
        raise click.UsageError("name functions, or pass --all, or --stale")
    settings = _settings()
    client = make_client("lambda", settings.client_section)
    functions = {f["name"]: f for f in wrencore_functions(client, settings.name_prefix)}
    if names:
        unknown = [n for n in names if n not in functions]
        if unknown:
            raise WrenError(f"not a wrencore function: {', '.join(unknown)}; "
                            f"`wrencore lambda list` shows them")
        chosen = list(names)
    elif stale:
        from .package import build_package

        current = build_package().sha256
        chosen = [n for n, f in functions.items() if f["runtime_hash"] != current]
    else:
        chosen = list(functions)
    iam = None if keep_roles else make_client("iam", settings.client_section)
    sqs = make_client("sqs", settings.client_section)
    for name in chosen:
        client.delete_function(FunctionName=name)
        role = functions[name]["role"].rsplit("/", 1)[-1]
        note = _delete_failure_queue(sqs, name)
        if iam is not None and role == name[:64] and role != \
                (settings.role_arn or "").rsplit("/", 1)[-1]:
            _delete_role(iam, role)
            note += f" and its role {role}"
        click.echo(f"deleted {name}{note}")
    if not chosen:
        click.echo("nothing to delete")
    if not keep_layers:
        for layer in _unused_layers(functions, chosen):
            client.delete_layer_version(LayerName=layer[0], VersionNumber=layer[1])
            click.echo(f"deleted layer {layer[0]}:{layer[1]}")


def _unused_layers(functions: Dict[str, Dict[str, Any]],
                   deleted: List[str]) -> List[Tuple[str, int]]:
    """wrencore's runtime layer versions the ``deleted`` functions used and no other does."""
    kept = {arn for name, fn in functions.items() if name not in deleted for arn in fn["layers"]}
    unused = {arn for name in deleted for arn in functions[name]["layers"]} - kept
    layers = []
    for arn in sorted(unused):  # arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION
        name, version = arn.split(":")[-2:]
        if name.startswith("wrencore-py") and version.isdigit():
            layers.append((name, int(version)))
    return layers


def _delete_failure_queue(sqs: Any, function: str) -> str:
    from .deploy import FAILURE_QUEUE_SUFFIX

    try:
        url = sqs.get_queue_url(QueueName=f"{function}{FAILURE_QUEUE_SUFFIX}")["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return ""
    sqs.delete_queue(QueueUrl=url)
    return f", its failure queue {function}{FAILURE_QUEUE_SUFFIX}"


def _delete_role(iam: Any, role: str) -> Optional[str]:
    try:
        for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            iam.delete_role_policy(RoleName=role, PolicyName=policy)
        iam.delete_role(RoleName=role)
    except iam.exceptions.NoSuchEntityException:
        return None
    return role
