"""``wrencore lambda …``: build, deploy and inspect the runtime's Lambda function."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def add_commands(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser("lambda", help="build and deploy the AWS Lambda runtime")
    commands = parser.add_subparsers(dest="lambda_command", required=True)
    deploy = commands.add_parser("deploy", help="create or update the function (idempotent)")
    deploy.set_defaults(func=_deploy)
    status = commands.add_parser("status", help="show the deployed function, if any")
    status.set_defaults(func=_status)
    build = commands.add_parser("build", help="write the deployment zip to a file")
    build.add_argument("output", help="path of the zip to write")
    build.set_defaults(func=_build)


def _deployer():
    from wrencore.config import Config
    from wrencore.plugins import get_registry

    from .deploy import Deployer, LambdaSettings

    config = Config()
    storage_name = str(config.get("storage") or "s3")
    storage = get_registry().load("storage", storage_name)(config.section(storage_name))
    return Deployer(LambdaSettings.from_config(config), storage)


def _deploy(args: argparse.Namespace) -> int:
    deployed = _deployer().deploy()
    print(json.dumps(asdict(deployed), indent=2))
    return 0


def _status(args: argparse.Namespace) -> int:
    deployer = _deployer()
    deployed = deployer.describe()
    if deployed is None:
        print(f"Lambda function {deployer.function_name} is not deployed", file=sys.stderr)
        return 1
    print(json.dumps(dict(asdict(deployed), matches_client=(
        deployed.runtime_hash == deployer.package.sha256)), indent=2))
    return 0


def _build(args: argparse.Namespace) -> int:
    from .package import build_package

    package = build_package()
    with open(args.output, "wb") as f:
        f.write(package.zip_bytes)
    print(f"{args.output}: {len(package.zip_bytes)} bytes, runtime {package.sha256}")
    return 0
