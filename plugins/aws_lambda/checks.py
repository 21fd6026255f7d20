"""``wrencore config check --backend aws_lambda``: what the backend needs, read-only."""

from __future__ import annotations

from typing import Callable

from wrencore.config import Config
from wrencore_aws.permissions import (LAMBDA_ACTIONS, LAMBDA_ROLE_ACTIONS, STORAGE_ACTIONS,
                                      check_actions, check_bucket, check_identity)


def check(config: Config, report: Callable[..., None]) -> None:
    from wrencore_aws.clients import make_client

    from .deploy import Deployer, LambdaSettings

    settings = LambdaSettings.from_config(config)
    storage_name = str(config.get("storage") or "s3")
    if storage_name != "s3":
        report("storage", False, f"storage = {storage_name!r}: Lambda can only reach 's3'")
        return
    identity = check_identity(settings.client_section, report)
    if identity is None:
        return
    storage = check_bucket(config, report)
    client = make_client("lambda", settings.client_section)
    try:
        client.list_functions(MaxItems=1)
        report("Lambda access", True, f"lambda:ListFunctions in {identity[1]}")
    except Exception as exc:
        from wrencore_aws.permissions import _one_line

        report("Lambda access", False, _one_line(exc))
        return
    actions = STORAGE_ACTIONS + LAMBDA_ACTIONS + ([] if settings.role_arn else
                                                   LAMBDA_ROLE_ACTIONS)
    check_actions(settings.client_section, identity[0], actions, report, "IAM permissions")
    if settings.role_arn:
        iam = make_client("iam", settings.client_section)
        role = settings.role_arn.rsplit("/", 1)[-1]
        try:
            iam.get_role(RoleName=role)
            report("execution role", True, settings.role_arn)
        except Exception as exc:
            report("execution role", False, f"[aws_lambda] role_arn {settings.role_arn}: "
                                            f"{type(exc).__name__}: {exc}")
    if storage is None:
        return
    deployer = Deployer(settings, storage)
    deployed = deployer.describe()
    later = ("; it is deployed on first use (auto_deploy = true)" if settings.auto_deploy
             else "; run `wrencore lambda deploy`")
    if deployed is None:
        report("deployed runtime", settings.auto_deploy,
               f"{deployer.function_name} is not deployed{later}")
    elif deployed.runtime_hash != deployer.package.sha256:
        report("deployed runtime", settings.auto_deploy,
               f"{deployed.name} runs another wrencore runtime{later}")
    else:
        report("deployed runtime", True, f"{deployed.name} matches this client")
