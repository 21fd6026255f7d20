"""The ``[aws_lambda]`` configuration table, declared once: the config check, the
``LambdaSettings`` the backend reads and the configuration reference all come from here."""

from __future__ import annotations

from wrencore.settings import Setting

SECTION = "aws_lambda"
DOC = ("The `aws_lambda` backend: each call (or chunk) is one asynchronous Lambda invocation; "
       "arguments and results go through the storage (`[s3]`).")

SETTINGS = [
    Setting("name_prefix", "str", "wrencore", "Prefix of the function, role and layer names "
            "wrencore creates."),
    Setting("function_name", "str", None, "Use this function name instead of one derived from "
            "the package and runtime."),
    Setting("role_arn", "str", None, "An existing execution role; unset: wrencore creates a "
            "least-privilege role `{name_prefix}-…`."),
    Setting("memory", "int", 1024, "The function's memory, MB (CPU grows with it).",
            minimum=128, maximum=10240),
    Setting("timeout", "int", 300, "The function's timeout, seconds.", minimum=1, maximum=900),
    Setting("invoke_threads", "int", 64, "Threads sending invocations.", minimum=1),
    Setting("max_in_flight", "int", 1000, "Invocations under way at once, at most (keep it "
            "under the account's concurrency limit).", minimum=1),
    Setting("result_grace", "float", 30.0, "Seconds past the function timeout before a "
            "silent call counts as lost.", minimum=0),
    Setting("dead_letter_check_interval", "float", 2.0, "Seconds between peeks at the "
            "functions' failure queues while invoked calls are pending (a call whose event "
            "the function refused fails with MessageRefusedError).", minimum=0),
    Setting("relay_min", "int", 200, "A map of at least this many calls at chunksize 1 is "
            "invoked through relay events: the client sends one Invoke per `relay_size` calls "
            "and the function invokes each of them itself. 0: never.", minimum=0),
    Setting("relay_size", "int", 100, "Calls a relay event carries, at most (it is also kept "
            "under the asynchronous event limit of 256 KB).", minimum=2, maximum=1000),
    Setting("retry_for", "float", 600.0, "Seconds to keep retrying a throttled or failing "
            "invocation.", minimum=0),
    Setting("auto_deploy", "bool", True, "Deploy on first use when the function is missing "
            "or stale (else `wrencore lambda deploy`)."),
    Setting("runtime_path", "str", None, "Build the package from this `wrencore_runtime` "
            "directory."),
    Setting("architecture", "str", "x86_64", "The functions' architecture; job runtimes are "
            "built for it.", choices=("x86_64", "arm64")),
    Setting("max_unzipped_size", "int", 250 * 1024 * 1024, "Bytes of function and layers "
            "unzipped, at most (Lambda's limit is 250 MB).", minimum=1),
    Setting("task_key", "str", "/wrencore/task-key", "The SSM SecureString parameter holding "
            "the key events are signed with (created on first use); only the function's role "
            "may read it."),
    Setting("task_key_kms_key_id", "str", "", "The KMS key that encrypts the task key; "
            "empty: `aws/ssm`."),
    Setting("region", "str", None, "The region of Lambda and IAM; unset: boto3's "
            "(`AWS_DEFAULT_REGION`, `~/.aws/config`)."),
    Setting("endpoint_url", "str", None, "Another Lambda endpoint (tests, emulators)."),
]
