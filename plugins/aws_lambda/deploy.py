"""Deploying the runtime as a Lambda function: IAM role, function, readiness. Idempotent.

The function is named after the runtime's content hash (``{name_prefix}-{hash16}``) unless
``[aws_lambda] function_name`` pins a name, so a client finds the function built from its own
runtime, and deploying unchanged code changes nothing. Its role may read and write only the
job storage's bucket prefix and write only its own log group.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from wrencore.config import Config
from wrencore.errors import ConfigError, RuntimeMismatchError, WrenError
from wrencore_aws.clients import call_with_retries, error_code, is_transient, make_client
from wrencore_aws.completion import list_statement, send_statement
from wrencore_aws.keys import DEFAULT_PARAMETER, client_key_source, key_read_statement, worker_key_spec
from wrencore_aws.permissions import (KMS_DESCRIBE, KMS_KEY_WRITE, KMS_READ, KMS_WRITE,
                                      kms_key_arn,
                                      kms_statements, storage_statements)
from wrencore_aws.ssm import SsmKeySource
from wrencore_runtime.protocol import PYTHON, SERIALIZER
from wrencore_aws.s3 import S3Storage

from .package import RuntimePackage, build_package

logger = logging.getLogger(__name__)

SECTION = "aws_lambda"
HASH_VARIABLE = "WRENCORE_RUNTIME_HASH"
PYTHON_VARIABLE = "WRENCORE_PYTHON"
SERIALIZER_VARIABLE = "WRENCORE_SERIALIZER"
TIMEOUT_VARIABLE = "WRENCORE_FUNCTION_TIMEOUT"
#: The hash of the job runtime whose layer the function has ("" for none).
ENVIRONMENT_VARIABLE = "WRENCORE_ENVIRONMENT_HASH"
#: Where the handler finds the task key: a KeySource spec naming the SSM parameter (never
#: the key itself; see ``wrencore_runtime.auth``).
TASK_KEY_VARIABLE = "WRENCORE_TASK_KEY"
#: The failure queue of function F is ``F{FAILURE_QUEUE_SUFFIX}``: Lambda sends there the
#: record of every asynchronous invocation that failed (the on-failure destination).
FAILURE_QUEUE_SUFFIX = "-dlq"
#: Seconds a failure record stays in its queue for inspection (SQS's default, 4 days).
FAILURE_RETENTION = 4 * 86400
LAMBDA_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


class DeployError(WrenError):
    """Deploying the Lambda function failed; the message says at which step."""


@dataclass
class LambdaSettings:
    """The ``[aws_lambda]`` configuration table (env: ``WRENCORE_AWS_LAMBDA__<KEY>``).

    Attributes:
        name_prefix: functions are named ``{name_prefix}-py{XY}-{runtime hash}``.
        function_name: pin one name instead (a changed runtime then updates it in place).
        role_arn: use this execution role instead of creating a least-privilege one.
        memory, timeout: the function's memory (MB) and timeout (seconds).
        invoke_threads: threads issuing invocations (default 64).
        max_in_flight: calls invoked and not yet finished, at most (default 1000).
        result_grace: seconds past the function timeout before a silent call counts as lost.
        retry_for: seconds to keep retrying a throttled or failing invocation.
        relay_min, relay_size: a map of at least ``relay_min`` calls at chunksize 1 goes out
            in relay events of up to ``relay_size`` calls, which the function invokes itself.
        dead_letter_check_interval: seconds between peeks at the failure queues.
        auto_deploy: deploy on first use when the function is missing or stale.
        runtime_path: build the package from this ``wrencore_runtime`` directory.
        architecture: ``x86_64`` or ``arm64``; job runtimes are built for it.
        max_unzipped_size: bytes of function and layers unzipped, at most (Lambda: 250 MB).
        endpoint_url, region: override boto3's endpoint and region for Lambda and IAM.
        task_key: the SSM SecureString parameter holding the task key (created on first
            use; the function's role may read only it). Default ``/wrencore/task-key``.
        task_key_kms_key_id: the KMS key that encrypts it (default: ``aws/ssm``).
    """

    name_prefix: str = "wrencore"
    function_name: Optional[str] = None
    role_arn: Optional[str] = None
    memory: int = 1024
    timeout: int = 300
    invoke_threads: int = 64
    max_in_flight: int = 1000
    result_grace: float = 30.0
    retry_for: float = 600.0
    relay_min: int = 200
    relay_size: int = 100
    dead_letter_check_interval: float = 2.0
    auto_deploy: bool = True
    runtime_path: Optional[str] = None
    architecture: str = "x86_64"
    max_unzipped_size: int = 250 * 1024 * 1024
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    task_key: str = DEFAULT_PARAMETER
    task_key_kms_key_id: str = ""

    @classmethod
    def from_config(cls, config: Config) -> "LambdaSettings":
        from wrencore.settings import convert

        from .settings import SETTINGS

        section = config.section(SECTION)
        return cls(**{setting.name: convert(setting, section.get(setting.name, setting.default),
                                            SECTION, section.origins.get(setting.name, ""))
                      for setting in SETTINGS})

    @property
    def client_section(self) -> Dict[str, Any]:
        return {"endpoint_url": self.endpoint_url, "region": self.region}


@dataclass
class DeployedFunction:
    name: str
    arn: str
    runtime_hash: str
    python: str
    serializer: str
    timeout: int
    memory: int
    environment_hash: str = ""
    task_key: str = ""
    #: The ARN of the on-failure destination of asynchronous invocations ("" for none).
    failure_destination: str = ""
    #: The URL of that queue, once this client has made sure it exists.
    failure_queue_url: str = ""


def _deployed(configuration: Mapping[str, Any], failure_destination: str = "") -> DeployedFunction:
    variables = (configuration.get("Environment") or {}).get("Variables") or {}
    return DeployedFunction(
        name=configuration["FunctionName"], arn=configuration["FunctionArn"],
        runtime_hash=variables.get(HASH_VARIABLE, ""), python=variables.get(PYTHON_VARIABLE, ""),
        serializer=variables.get(SERIALIZER_VARIABLE, ""),
        timeout=int(configuration.get("Timeout") or 0),
        memory=int(configuration.get("MemorySize") or 0),
        environment_hash=variables.get(ENVIRONMENT_VARIABLE, ""),
        task_key=variables.get(TASK_KEY_VARIABLE, ""),
        failure_destination=failure_destination,
    )


class Deployer:
    """Builds, deploys and describes the function for one configuration and storage."""

    def __init__(self, settings: LambdaSettings, storage: S3Storage,
                 runtime: Optional[Dict[str, Any]] = None):
        if not isinstance(storage, S3Storage):
            raise ConfigError(
                f"the aws_lambda backend needs storage Lambda can reach, i.e. 's3', not "
                f"{type(storage).__name__}; set storage = \"s3\" and [s3] bucket"
            )
        self.settings = settings
        self.storage = storage
        #: The job runtime (``job["runtime"]``) the function's layer delivers, if any.
        self.runtime = runtime
        self._package: Optional[RuntimePackage] = None
        self._lambda: Any = None
        self._iam: Any = None
        self._sqs: Any = None
        self._failure_queue: Optional[Tuple[str, str]] = None  # (url, arn)
        self._key_source: Optional[SsmKeySource] = None

    # -- pieces ----------------------------------------------------------------------
    @property
    def package(self) -> RuntimePackage:
        if self._package is None:
            self._package = build_package(self.settings.runtime_path)
        return self._package

    @property
    def environment_hash(self) -> str:
        return self.runtime["hash"] if self.runtime else ""

    @property
    def function_name(self) -> str:
        if self.settings.function_name:
            return self.settings.function_name
        identity = self.package.short_hash
        if self.runtime:
            identity = hashlib.sha256(
                f"{self.package.sha256}:{self.runtime['hash']}".encode()).hexdigest()[:16]
        return f"{self.settings.name_prefix}-{PYTHON.replace('.', '')}-{identity}"

    def layers(self) -> List[str]:
        """The layer ARNs that deliver the job runtime (published on first use)."""
        if not self.runtime:
            return []
        from .layers import ensure_layer

        package_size = sum(i.file_size for i in zipfile.ZipFile(
            io.BytesIO(self.package.zip_bytes)).infolist())
        return ensure_layer(self.lambda_client, self.storage, self.runtime,
                            self.package.lambda_runtime, package_size,
                            self.settings.max_unzipped_size)

    @property
    def lambda_client(self) -> Any:
        if self._lambda is None:
            self._lambda = make_client("lambda", self.settings.client_section)
        return self._lambda

    @property
    def iam_client(self) -> Any:
        if self._iam is None:
            self._iam = make_client("iam", self.settings.client_section)
        return self._iam

    @property
    def sqs_client(self) -> Any:
        if self._sqs is None:
            self._sqs = make_client("sqs", self.settings.client_section)
        return self._sqs

    @property
    def failure_queue_name(self) -> str:
        return f"{self.function_name}{FAILURE_QUEUE_SUFFIX}"

    def ensure_failure_queue(self) -> Tuple[str, str]:
        """The URL and ARN of the function's failure queue, created if missing (SSE-SQS).

        Lambda sends it the record of each asynchronous invocation that failed after its
        retries, with the original event; the backend reads it to fail the calls of an
        event the function refused at once (see ``LambdaBackend``)."""
        if self._failure_queue is None:
            sqs = self.sqs_client
            url = call_with_retries(lambda: sqs.create_queue(
                QueueName=self.failure_queue_name, Attributes={
                    "MessageRetentionPeriod": str(FAILURE_RETENTION),
                    "SqsManagedSseEnabled": "true"})["QueueUrl"],
                retry_for=60, what="CreateQueue")
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                "Attributes"]["QueueArn"]
            self._failure_queue = (url, arn)
        return self._failure_queue

    @property
    def key_source(self) -> SsmKeySource:
        """The task key, as this client reaches it."""
        if self._key_source is None:
            self._key_source = client_key_source(self.settings.task_key,
                                                 self.settings.client_section,
                                                 self.settings.task_key_kms_key_id)
        return self._key_source

    @property
    def task_key_variable(self) -> str:
        return json.dumps(worker_key_spec(self.key_source), sort_keys=True)

    def role_policy(self, account: str, region: str) -> Dict[str, Any]:
        """Least privilege: the storage's prefix in its bucket, the function's log group,
        reading the task key, sending to completion queues and to its own failure queue
        (Lambda sends failure records with the execution role), and the customer-managed KMS
        keys of the storage (SSE-KMS) and of the task key, if configured."""
        bucket, prefix = self.storage.bucket, self.storage.prefix
        section = self.settings.client_section
        kms = kms_statements([
            (kms_key_arn(_storage_kms_key(self.storage), region=region, account=account,
                         client_section=section), KMS_WRITE),
            (kms_key_arn(self.settings.task_key_kms_key_id, region=region, account=account,
                         client_section=section), KMS_READ)])
        log_group = f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{self.function_name}"
        return {
            "Version": "2012-10-17",
            "Statement": storage_statements(bucket, prefix) + [
                {"Sid": "OwnLogGroup", "Effect": "Allow", "Action": "logs:CreateLogGroup",
                 "Resource": log_group},
                {"Sid": "OwnLogStreams", "Effect": "Allow",
                 "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": f"{log_group}:*"},
                key_read_statement(region, account, self.settings.task_key),
                send_statement(region, account),
                {"Sid": "FailureQueue", "Effect": "Allow", "Action": "sqs:SendMessage",
                 "Resource": f"arn:aws:sqs:{region}:{account}:{self.failure_queue_name}"},
                {"Sid": "RelayToItself", "Effect": "Allow", "Action": "lambda:InvokeFunction",
                 "Resource": f"arn:aws:lambda:{region}:{account}:function:{self.function_name}"},
            ] + kms,
        }

    def ensure_role(self) -> str:
        if self.settings.role_arn:
            return self.settings.role_arn
        iam = self.iam_client
        name = self.function_name[:64]
        try:
            arn = iam.get_role(RoleName=name)["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            arn = iam.create_role(
                RoleName=name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST_POLICY),
                Description="wrencore Lambda runtime: job storage prefix and own logs only",
            )["Role"]["Arn"]
            logger.info("created IAM role %s", arn)
        account = arn.split(":")[4]
        region = self.lambda_client.meta.region_name
        iam.put_role_policy(RoleName=name, PolicyName="wrencore-runtime",
                            PolicyDocument=json.dumps(self.role_policy(account, region)))
        return arn

    def describe(self) -> Optional[DeployedFunction]:
        """The deployed function of this configuration, or None if there is none."""
        client = self.lambda_client
        try:
            configuration = call_with_retries(
                lambda: client.get_function_configuration(FunctionName=self.function_name),
                retry_for=60, what="GetFunctionConfiguration")
        except client.exceptions.ResourceNotFoundException:
            return None
        return _deployed(configuration, self._failure_destination())

    def _failure_destination(self) -> str:
        client = self.lambda_client
        try:
            config = client.get_function_event_invoke_config(FunctionName=self.function_name)
        except client.exceptions.ResourceNotFoundException:
            return ""
        return ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
            "Destination") or ""

    def _environment(self) -> Dict[str, Any]:
        return {"Variables": {
            HASH_VARIABLE: self.package.sha256, PYTHON_VARIABLE: PYTHON,
            SERIALIZER_VARIABLE: SERIALIZER, TIMEOUT_VARIABLE: str(self.settings.timeout),
            ENVIRONMENT_VARIABLE: self.environment_hash,
            TASK_KEY_VARIABLE: self.task_key_variable,
        }}

    def _wait_until_ready(self, deadline_seconds: float = 300) -> Dict[str, Any]:
        deadline = time.monotonic() + deadline_seconds
        delay = 0.1
        while True:
            configuration = self.lambda_client.get_function_configuration(
                FunctionName=self.function_name)
            state = configuration.get("State", "Active")
            update = configuration.get("LastUpdateStatus", "Successful")
            if state == "Active" and update in ("Successful", None):
                return configuration
            if state == "Failed" or update == "Failed":
                raise DeployError(
                    f"Lambda function {self.function_name} failed to become ready: "
                    f"{configuration.get('StateReason') or configuration.get('LastUpdateStatusReason')}")
            if time.monotonic() > deadline:
                raise DeployError(f"Lambda function {self.function_name} not ready after "
                                  f"{deadline_seconds:g} s (state {state}, update {update})")
            time.sleep(delay)
            delay = min(delay * 2, 5)

    @staticmethod
    def _role_not_ready(exc: BaseException) -> bool:
        # A new IAM role takes seconds to become assumable by Lambda.
        return (error_code(exc) == "InvalidParameterValueException"
                and "role" in str(exc).lower()) or is_transient(exc)

    # -- the operation -----------------------------------------------------------------
    def deploy(self) -> DeployedFunction:
        """Create or update the function so it runs this client's runtime; wait until ready."""
        package, settings, client = self.package, self.settings, self.lambda_client
        existing = self.describe()
        layers = self.layers()
        if existing is None:
            role_arn = self.ensure_role()
            logger.info("creating Lambda function %s (runtime %s)", self.function_name,
                        package.short_hash)
            try:
                call_with_retries(lambda: client.create_function(
                    FunctionName=self.function_name, Runtime=package.lambda_runtime,
                    Role=role_arn, Handler=package.handler, Code={"ZipFile": package.zip_bytes},
                    Timeout=settings.timeout, MemorySize=settings.memory,
                    Environment=self._environment(), Publish=False, Layers=layers,
                    Description=f"wrencore runtime {package.short_hash}",
                    Tags={"wrencore:runtime-hash": package.sha256},
                ), retry_for=120, base=0.5, retryable=self._role_not_ready, what="CreateFunction")
            except client.exceptions.ResourceConflictException:
                pass  # another client created it meanwhile; fall through to the checks below
        else:
            self.ensure_role()
            if existing.runtime_hash != package.sha256:
                logger.info("updating code of %s to runtime %s", self.function_name,
                            package.short_hash)
                self._wait_until_ready()
                call_with_retries(lambda: client.update_function_code(
                    FunctionName=self.function_name, ZipFile=package.zip_bytes),
                    retry_for=120, what="UpdateFunctionCode")
            if (existing.runtime_hash != package.sha256 or existing.timeout != settings.timeout
                    or existing.memory != settings.memory or existing.python != PYTHON
                    or existing.serializer != SERIALIZER
                    or existing.environment_hash != self.environment_hash
                    or existing.task_key != self.task_key_variable):
                self._wait_until_ready()
                call_with_retries(lambda: client.update_function_configuration(
                    FunctionName=self.function_name, Timeout=settings.timeout,
                    MemorySize=settings.memory, Environment=self._environment(),
                    Runtime=package.lambda_runtime, Handler=package.handler, Layers=layers),
                    retry_for=120, what="UpdateFunctionConfiguration")
        url, arn = self.ensure_failure_queue()
        if existing is None or existing.failure_destination != arn:
            self._configure_async_invocation(arn)
        deployed = _deployed(self._wait_until_ready(), self._failure_destination())
        deployed.failure_queue_url = url
        self.check(deployed)
        return deployed

    def _configure_async_invocation(self, failure_queue_arn: str) -> None:
        """No automatic retry of failed events (a crashed call is the client's to retry),
        and the record of a failed one goes to the function's failure queue."""
        try:
            call_with_retries(lambda: self.lambda_client.put_function_event_invoke_config(
                FunctionName=self.function_name, MaximumRetryAttempts=0,
                DestinationConfig={"OnFailure": {"Destination": failure_queue_arn}}),
                retry_for=60, retryable=self._role_not_ready,
                what="PutFunctionEventInvokeConfig")
        except Exception as exc:  # calls of refused events then end at their deadline
            logger.warning("could not set the on-failure destination of %s: %s: %s. Calls "
                           "whose event the function refuses end only at their deadline.",
                           self.function_name, type(exc).__name__, exc)

    def check(self, deployed: DeployedFunction) -> None:
        """Refuse a function whose runtime differs from this client's."""
        problems = []
        if deployed.runtime_hash != self.package.sha256:
            problems.append(f"it runs runtime {deployed.runtime_hash[:16] or 'unknown'}, this "
                            f"client has {self.package.short_hash}")
        if deployed.environment_hash != self.environment_hash:
            problems.append(f"its layers deliver runtime "
                            f"{deployed.environment_hash[:16] or 'none'}, the job needs "
                            f"{self.environment_hash[:16] or 'none'}"
                            f"{self._distribution_difference(deployed.environment_hash)}")
        if deployed.python != PYTHON:
            problems.append(f"Python {deployed.python or 'unknown'} there, {PYTHON} here")
        if deployed.serializer != SERIALIZER:
            problems.append(f"{deployed.serializer or 'unknown serializer'} there, "
                            f"{SERIALIZER} here")
        if problems:
            raise RuntimeMismatchError(
                f"Lambda function {deployed.name} does not match this client: "
                f"{'; '.join(problems)}. Run `wrencore lambda deploy` (or set "
                f"[aws_lambda] auto_deploy = true) to deploy this client's runtime."
            )

    def _distribution_difference(self, deployed_hash: str) -> str:
        from wrencore.environment import distribution_difference
        from wrencore_runtime.environment import load_manifest

        try:
            there = load_manifest(self.storage, deployed_hash)["distributions"] \
                if deployed_hash else {}
        except Exception:
            return ""
        return f" ({distribution_difference(there, (self.runtime or {}).get('distributions') or {})})"

    def ensure(self) -> DeployedFunction:
        """The function for this client: deployed if missing (with ``auto_deploy``), checked."""
        deployed = self.describe()
        stale = deployed is not None and (
            deployed.runtime_hash != self.package.sha256
            or deployed.environment_hash != self.environment_hash
            or deployed.timeout != self.settings.timeout or deployed.memory != self.settings.memory
            or deployed.task_key != self.task_key_variable
            or deployed.failure_destination != self.ensure_failure_queue()[1])
        if deployed is None or (self.settings.auto_deploy and stale):
            if not self.settings.auto_deploy:
                raise DeployError(
                    f"Lambda function {self.function_name} does not exist; run "
                    f"`wrencore lambda deploy` or set [aws_lambda] auto_deploy = true")
            return self.deploy()
        self.check(deployed)
        deployed.failure_queue_url = self.ensure_failure_queue()[0]
        return deployed


def _storage_kms_key(storage: Any) -> str:
    """The customer KMS key the storage encrypts with ("" for none or the AWS-managed one)."""
    return getattr(storage, "sse_kms_key_id", "") if getattr(storage, "sse", "") == "aws:kms" \
        else ""


def user_policy(*, region: str, account: str, bucket: str, prefix: str,
                name_prefix: str = "wrencore", task_key: str = DEFAULT_PARAMETER,
                sse_kms_key_id: str = "", task_key_kms_key_id: str = "") -> Dict[str, Any]:
    """The least a user needs to deploy and run the ``aws_lambda`` backend: the job
    storage's prefix, the functions and execution roles named ``{name_prefix}-*`` and the
    layers named ``wrencore-py*`` (created on first use; the role passed to Lambda), the task key, the client's
    completion queues (and finding orphaned ones to sweep), the functions' failure queues
    (``{function}-dlq``), reading the functions' logs (``Future.logs()``), and the
    customer-managed KMS keys of ``[s3] sse_kms_key_id`` and ``[aws_lambda]
    task_key_kms_key_id`` if set (an alias is resolved with DescribeKey)."""
    functions = f"arn:aws:lambda:{region}:{account}:function:{name_prefix}-*"
    return {"Version": "2012-10-17", "Statement": storage_statements(bucket, prefix) + [
        {"Sid": "Functions", "Effect": "Allow",
         "Action": ["lambda:GetFunctionConfiguration", "lambda:CreateFunction",
                    "lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration",
                    "lambda:PutFunctionEventInvokeConfig",
                    "lambda:GetFunctionEventInvokeConfig", "lambda:InvokeFunction",
                    "lambda:TagResource"],
         "Resource": functions},
        {"Sid": "Layers", "Effect": "Allow",
         "Action": ["lambda:PublishLayerVersion", "lambda:ListLayerVersions",
                    "lambda:GetLayerVersion"],
         # Layers are named after the job runtime only (layers.layer_name), whatever the
         # name_prefix: functions of every prefix share them.
         "Resource": [f"arn:aws:lambda:{region}:{account}:layer:wrencore-py*",
                      f"arn:aws:lambda:{region}:{account}:layer:wrencore-py*:*"]},
        {"Sid": "ExecutionRoles", "Effect": "Allow",
         "Action": ["iam:GetRole", "iam:CreateRole", "iam:PutRolePolicy", "iam:PassRole"],
         "Resource": f"arn:aws:iam::{account}:role/{name_prefix}-*"},
        {"Sid": "TaskKey", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:PutParameter"],
         "Resource": f"arn:aws:ssm:{region}:{account}:parameter/{task_key.lstrip('/')}"},
        {"Sid": "CompletionQueues", "Effect": "Allow",
         "Action": ["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteQueue"],
         "Resource": f"arn:aws:sqs:{region}:{account}:wrencore-done-*"},
        {"Sid": "FailureQueues", "Effect": "Allow",
         "Action": ["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:DeleteQueue"],
         "Resource": f"arn:aws:sqs:{region}:{account}:{name_prefix}-*{FAILURE_QUEUE_SUFFIX}"},
        list_statement(),
        {"Sid": "ReadLogs", "Effect": "Allow",
         "Action": ["logs:FilterLogEvents", "logs:GetLogEvents"],
         "Resource": f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{name_prefix}-*"},
        # Finding the functions' groups by prefix lists group names (not their events).
        {"Sid": "FindLogGroups", "Effect": "Allow", "Action": "logs:DescribeLogGroups",
         "Resource": f"arn:aws:logs:{region}:{account}:log-group:*"},
    ] + kms_statements([
        (kms_key_arn(sse_kms_key_id, region=region, account=account),
         KMS_WRITE + KMS_DESCRIBE),
        (kms_key_arn(task_key_kms_key_id, region=region, account=account),
         KMS_KEY_WRITE + KMS_DESCRIBE)])}


def user_policy_json() -> str:
    """:func:`user_policy` for the docs: any region and account, bucket ``BUCKET``, the
    default prefixes."""
    return json.dumps(user_policy(region="*", account="*", bucket="BUCKET",
                                  prefix="wrencore/"), indent=2)


def deploy_function(config: Union[Config, Mapping[str, Any], None] = None) -> DeployedFunction:
    """Deploy (or confirm) the Lambda function for ``config``; the Python API of the CLI.

    Args:
        config: a :class:`wrencore.config.Config` or overrides of the configuration.

    Returns:
        The deployed function's name, ARN, runtime hash and settings.
    """
    from wrencore.plugins import get_registry

    if not isinstance(config, Config):
        config = Config(config or {})
    storage_name = str(config.get("storage") or "s3")
    storage = get_registry().load("storage", storage_name)(config.section(storage_name))
    return Deployer(LambdaSettings.from_config(config), storage).deploy()
