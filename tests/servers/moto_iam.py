"""moto's server with IAM enforcement as AWS does it for the requests wrencore makes.

Run as a script (``python tests/servers/moto_iam.py -H 127.0.0.1 -p PORT``). moto authorizes
requests against IAM policies once ``/moto-api/reset-auth`` sets its unauthenticated
allowance (0: every request from then on), but names the resource only for S3, for SQS
queues and IAM roles that already exist, and for STS AssumeRole; everything else it checks
against ``"*"``, which no resource-scoped statement matches. AWS authorizes against the
resource's ARN, also for a resource the request creates. This shim gives moto that ARN for
the services wrencore's policies scope (SQS, IAM roles and instance profiles, SSM
parameters, CloudWatch log groups, Lambda functions and layers), authorizes operations
whose IAM action has another name as AWS does (``SendMessageBatch`` as
``sqs:SendMessage``, Lambda's ``Invoke`` as ``lambda:InvokeFunction`` …), verifies the
signature of a request without a body (GET, DELETE) over the empty body it was signed
with, and lets presigned S3 URLs (which moto cannot authenticate) through as their signer.

For the Lambda harness (tests/servers/lambda_harness.py), which plays the Lambda service:

* an ``Invoke`` carrying the unsigned header ``X-Harness-Authorize-Only`` is authorized
  (the caller's signature and ``lambda:InvokeFunction`` on the function) and answered 204
  without running anything: the harness runs the function itself;
* an ``AssumeRole`` carrying ``X-Harness-Service-Principal: lambda.amazonaws.com`` is
  checked against the role's trust policy with that service as the principal, as AWS
  checks the role Lambda assumes for a function (moto compares only ``AWS`` principals).

moto does not evaluate policy conditions (such as ``ec2:ResourceTag``), nor resource ARNs
of EC2 actions.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import parse_qs, urlparse


#: API operations that AWS authorizes as another IAM action (moto uses the operation's name).
IAM_ACTIONS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "lambda:Invoke": "lambda:InvokeFunction",
}
AUTHORIZE_ONLY = "X-Harness-Authorize-Only"
SERVICE_PRINCIPAL = "X-Harness-Service-Principal"


def _arn(self, service: str, resource: str) -> str:
    return f"arn:aws:{service}:{self.region}:{self.current_account}:{resource}"


def lambda_resource(self) -> str:
    """The ARN AWS authorizes a Lambda API request against (the path names it)."""
    from urllib.parse import unquote

    parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
    if parts[1:2] == ["functions"]:
        if len(parts) == 2:  # CreateFunction names it in the body; ListFunctions: none
            name = (self.json_body or {}).get("FunctionName") if self.body else None
            return _arn(self, "lambda", f"function:{name}") if name else "*"
        name = parts[2]
        return name if name.startswith("arn:") else _arn(self, "lambda", f"function:{name}")
    if parts[1:2] == ["layers"] and len(parts) >= 4:
        version = f":{parts[4]}" if len(parts) > 4 else ""
        return _arn(self, "lambda", f"layer:{parts[2]}{version}")
    if parts[1:2] == ["tags"] and len(parts) >= 3:
        return "/".join(parts[2:])
    return "*"


def install() -> None:
    from moto.awslambda.responses import LambdaResponse
    from moto.core.responses import ActionAuthenticatorMixin
    from moto.iam.responses import IamResponse
    from moto.logs.responses import LogsResponse
    from moto.sqs.responses import SQSResponse
    from moto.ssm.responses import SimpleSystemManagerResponse

    def sqs_resource(self) -> str:
        name = self._get_param("QueueName") or self._get_queue_name()
        return _arn(self, "sqs", name) if name else "*"

    def iam_resource(self) -> str:
        profile = self._get_param("InstanceProfileName")  # e.g. AddRoleToInstanceProfile
        if profile:
            return f"arn:aws:iam::{self.current_account}:instance-profile/{profile}"
        role = self._get_param("RoleName")
        if role:
            return f"arn:aws:iam::{self.current_account}:role/{role}"
        return "*"

    def ssm_resource(self) -> str:
        name = self._get_param("Name")
        return _arn(self, "ssm", f"parameter/{name.lstrip('/')}") if name else "*"

    def logs_resource(self) -> str:
        group = self._get_param("logGroupName")
        if not group:  # DescribeLogGroups: AWS authorizes listing against every group
            return _arn(self, "logs", "log-group:*")
        stream = self._get_param("logStreamName")
        return _arn(self, "logs", f"log-group:{group}" + (f":log-stream:{stream}" if stream
                                                         else ""))

    from moto.iam.access_control import IAMRequestBase

    original_init = IAMRequestBase.__init__

    def init(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        self._action = IAM_ACTIONS.get(self._action, self._action)

    IAMRequestBase.__init__ = init
    original_assuming = IAMRequestBase._is_assuming_role_operation

    def assuming(self, resource_arn: str) -> bool:  # only AssumeRole checks trust policies
        return self._action == "sts:AssumeRole" and original_assuming(self, resource_arn)

    IAMRequestBase._is_assuming_role_operation = assuming
    original_trust = IAMRequestBase._check_role_trust_relationship

    def trusted(self, role_arn: str) -> bool:
        service = self._headers.get(SERVICE_PRINCIPAL)
        if not service:
            return original_trust(self, role_arn)
        trust = json.loads(self.backend.get_role_by_arn(role_arn).assume_role_policy_document)
        statements = trust["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            actions = statement.get("Action", [])
            services = (statement.get("Principal") or {}).get("Service", [])
            if (statement.get("Effect") == "Allow" and "Condition" not in statement
                    and "sts:AssumeRole" in ([actions] if isinstance(actions, str) else actions)
                    and service in ([services] if isinstance(services, str) else services)):
                return True
        return False

    IAMRequestBase._check_role_trust_relationship = trusted
    original_permitted = IAMRequestBase.check_action_permitted

    def permitted(self, resource: str) -> None:
        try:
            original_permitted(self, resource)
        except Exception:  # the server's log says what was denied to whom
            print(f"moto_iam: denied {self._action} on {resource} to {self._access_key.arn}",
                  file=sys.stderr, flush=True)
            raise

    IAMRequestBase.check_action_permitted = permitted
    original_request = IAMRequestBase._create_aws_request

    def aws_request(self):  # moto signs a bodiless request's form data, boto3 signed b""
        request = original_request(self)
        if not self._body and self._method in ("GET", "HEAD", "DELETE"):
            request.data = b""
        return request

    IAMRequestBase._create_aws_request = aws_request
    original_invoke = LambdaResponse.invoke

    def invoke(self):
        if self.headers.get(AUTHORIZE_ONLY):  # reached only when authorized
            return 204, {}, ""
        return original_invoke(self)

    LambdaResponse.invoke = invoke
    LambdaResponse._determine_resource = lambda_resource
    SQSResponse._determine_resource = sqs_resource
    IamResponse._determine_resource = iam_resource
    SimpleSystemManagerResponse._determine_resource = ssm_resource
    LogsResponse._determine_resource = logs_resource

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authorize(self, iam_request_cls, resource: str = "*") -> None:
        from moto import settings

        query = dict(parse_qs(urlparse(self.uri).query))
        query.update({k: v for k, v in (getattr(self, "querystring", None) or {}).items()
                      if k.startswith("X-Amz-") or k == "AWSAccessKeyId"})
        if "AWSAccessKeyId" in query:  # a SigV2 presigned URL
            query["X-Amz-Credential"] = [f"{query['AWSAccessKeyId'][0]}/20000101/"
                                         f"{self.region}/s3/aws4_request"]
        if (not self.headers.get("Authorization") and "X-Amz-Credential" in query
                and ActionAuthenticatorMixin.request_count
                >= settings.INITIAL_NO_AUTH_ACTION_COUNT):
            headers = dict(self.headers)
            headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential="
                                        f"{query['X-Amz-Credential'][0]}, "
                                        f"SignedHeaders=host, Signature=presigned")
            if "X-Amz-Security-Token" in query:
                headers["X-Amz-Security-Token"] = query["X-Amz-Security-Token"][0]
            request = iam_request_cls(account_id=self.current_account, method=self.method,
                                      path=self.raw_path, data=self.data, body=self.raw_body,
                                      headers=headers, action=self._get_action())
            request.check_action_permitted(resource)
            return
        original(self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authorize


if __name__ == "__main__":
    install()
    from moto.server import main

    sys.exit(main(sys.argv[1:]))
