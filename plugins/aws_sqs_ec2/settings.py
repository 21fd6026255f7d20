"""The ``[aws_sqs_ec2]`` configuration table, read once into typed settings.

Every key can also be set as ``WRENCORE_AWS_SQS_EC2__<KEY>`` or in
``Executor(config={"aws_sqs_ec2": {...}})``. For example::

    backend = "aws_sqs_ec2"

    [s3]
    bucket = "my-bucket"            # the default storage of this backend

    [aws_sqs_ec2]
    ami = "ami-0123456789abcdef0"   # required: a Debian/Ubuntu image with cloud-init
    instance_type = "c7i.large"
    spot = true
    min_instances = 0
    max_instances = 8               # map launches what is missing, up to this
    messages_per_instance = 1       # the fleet grows by one instance per this many messages
    numprocs = 0                    # daemons per instance; 0: one per core
    idle_timeout = 300              # an idle instance terminates itself after this
    min_uptime = 0
    queue_name = "wrencore-standalone"
    max_receives = 3                # receives before a message goes to the dead-letter queue
    visibility_timeout = 60         # extended by the daemon's heartbeat while a call runs
    log_group = "wrencore-standalone"

Workers log to CloudWatch under ``log_group``, stream ``{instance_id}-{process}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from wrencore.config import Config, Section
from wrencore.errors import ConfigError
from wrencore.settings import Setting, convert

SECTION = "aws_sqs_ec2"


DOC = ("The `aws_sqs_ec2` backend: an EC2 fleet whose daemons pull calls from an SQS queue; "
       "job data in `[s3]`. Its table also sets the `sqs` queue the fleet uses.")

SETTINGS = [
    Setting("ami", "str", None, "The instances' image (required): a Debian or Ubuntu AMI with "
            "cloud-init, in the fleet's region.", required=True),
    Setting("instance_type", "str", "t3.small", "The EC2 instance type."),
    Setting("spot", "bool", False, "Launch spot instances."),
    Setting("fleet", "str", "default", "Fleet name; instances are tagged `wrencore:fleet` with "
            "it."),
    Setting("min_instances", "int", 0, "Instances kept running when idle.", minimum=0),
    Setting("max_instances", "int", 1, "Live instances at most; `map` launches what is "
            "missing up to this.", minimum=1),
    Setting("messages_per_instance", "int", 1, "Queue messages per instance the fleet grows "
            "to.", minimum=1),
    Setting("numprocs", "int", 0, "Daemon processes per instance; 0: one per core.",
            minimum=0),
    Setting("idle_timeout", "float", 300.0, "Seconds idle before an instance terminates "
            "itself.", minimum=0),
    Setting("min_uptime", "float", 0.0, "Seconds an instance runs at least.", minimum=0),
    Setting("queue_name", "str", "wrencore-standalone", "The task queue (its dead-letter "
            "queue is `{queue_name}-dlq`)."),
    Setting("max_receives", "int", 3, "Receives before a message moves to the dead-letter "
            "queue.", minimum=1),
    Setting("visibility_timeout", "int", 60, "Seconds a received message stays hidden; "
            "extended by the daemon's heartbeat while a call runs.", minimum=0, maximum=43200),
    Setting("batch_size", "int", 10, "Messages a daemon receives at once (SQS allows 10).",
            minimum=1, maximum=10),
    Setting("poll_wait", "float", 20.0, "Seconds a receive waits (long polling).", minimum=0),
    Setting("instance_profile", "str", None, "An existing instance profile; unset: wrencore "
            "creates a least-privilege one for the fleet."),
    Setting("key_name", "str", None, "An EC2 key pair, to log in to instances with SSH."),
    Setting("subnet_id", "str", None, "The subnet to launch into; unset: the default VPC's. "
            "It needs a route to SQS, S3 and CloudWatch Logs (internet or VPC endpoints)."),
    Setting("security_group_ids", "list[str]", [], "Security groups (a list, or commas in "
            "an environment variable); unset: the VPC's default. No inbound rule is needed."),
    Setting("log_group", "str", "wrencore-standalone", "CloudWatch Logs group of the "
            "daemons; streams are `{instance_id}-{process}`."),
    Setting("platform", "str", "linux-x86_64", "The instances' platform; runtimes target it.",
            choices=("linux-x86_64", "linux-aarch64")),
    Setting("env_max_age", "float", 7 * 24 * 3600.0, "Seconds an unused runtime environment "
            "is kept on an instance.", minimum=0),
    Setting("env_max_bytes", "int", 20 * 1024 ** 3, "Bytes of runtime environments kept on "
            "an instance, least recently used evicted first.", minimum=0),
    Setting("dead_letter_check_interval", "float", 2.0, "Seconds between peeks at the "
            "dead-letter queue while calls are pending.", minimum=0),
    Setting("fleet_check_interval", "float", 15.0, "Seconds between checks that waiting "
            "calls have a live instance.", minimum=0),
    Setting("lost_after_empty", "float", 120.0, "A waiting call with no outcome fails with "
            "WorkerCrashedError once the task queue has looked empty (nothing waiting, "
            "nothing in flight) for this many seconds, counted from this long (and at least a "
            "minute) after the client last sent to it: its message was purged or deleted by "
            "hand. 0: never.",
            minimum=0),
    Setting("metadata_url", "str", "http://169.254.169.254", "The instance metadata "
            "service (tests point it elsewhere)."),
    Setting("task_key", "str", "/wrencore/task-key", "The SSM SecureString parameter holding "
            "the key task messages are signed with (created on first use); only the "
            "workers' role may read it."),
    Setting("task_key_kms_key_id", "str", "", "The KMS key that encrypts the task key; "
            "empty: `aws/ssm`."),
    Setting("queue_sse", "str", "sqs", "Server-side encryption of queued messages: `sqs` "
            "(SSE-SQS), `kms` (SSE-KMS with `queue_kms_key_id`), or `none`.",
            choices=("sqs", "kms", "none")),
    Setting("queue_kms_key_id", "str", "", "The KMS key of `queue_sse = \"kms\"`; empty: "
            "`alias/aws/sqs`."),
    Setting("region", "str", None, "The region of EC2, SQS, IAM and CloudWatch; unset: "
            "boto3's (`AWS_DEFAULT_REGION`, `~/.aws/config`)."),
    Setting("endpoint_url", "str", None, "Another AWS endpoint (tests, emulators)."),
]


@dataclass
class StandaloneSettings:
    #: Name of the task queue (its dead-letter queue is ``{queue_name}-dlq``).
    queue_name: str = "wrencore-standalone"
    #: Fleet name; instances are tagged ``wrencore:fleet`` with it.
    fleet: str = "default"
    max_receives: int = 3
    visibility_timeout: int = 60
    idle_timeout: float = 300.0
    min_uptime: float = 0.0
    min_instances: int = 0
    max_instances: int = 1
    #: Queue messages (waiting or in flight) per instance the fleet grows to.
    messages_per_instance: int = 1
    instance_type: str = "t3.small"
    ami: Optional[str] = None
    spot: bool = False
    #: Daemon processes per instance; 0 means one per core.
    numprocs: int = 0
    #: Existing instance profile to use; empty: create a least-privilege one for the fleet.
    instance_profile: Optional[str] = None
    key_name: Optional[str] = None
    subnet_id: Optional[str] = None
    security_group_ids: List[str] = field(default_factory=list)
    log_group: str = "wrencore-standalone"
    poll_wait: float = 20.0
    batch_size: int = 10
    metadata_url: str = "http://169.254.169.254"
    region: Optional[str] = None
    #: Environments of job runtimes on an instance are evicted when unused this long
    #: (seconds), or least recently used first beyond this many bytes.
    env_max_age: float = 7 * 24 * 3600.0
    env_max_bytes: int = 20 * 1024 ** 3
    #: The instances' platform (``linux-x86_64`` or ``linux-aarch64``): runtimes target it.
    platform: str = "linux-x86_64"
    #: Seconds between peeks at the dead-letter queue while calls are pending.
    dead_letter_check_interval: float = 2.0
    #: Seconds between checks that waiting calls have a live instance (else one launches).
    fleet_check_interval: float = 15.0
    #: Seconds the task queue must look empty before the calls still waiting are given up
    #: as lost (see ``StandaloneBackend``); 0: never.
    lost_after_empty: float = 120.0
    #: The SSM SecureString parameter holding the task key (created on first use; the
    #: workers' role may read only it), and the KMS key encrypting it (default aws/ssm).
    task_key: str = "/wrencore/task-key"
    task_key_kms_key_id: str = ""
    #: Server-side encryption of the task queue's messages at rest: ``sqs`` (SSE-SQS, the
    #: default), ``kms`` (SSE-KMS with ``queue_kms_key_id``, default ``alias/aws/sqs``), or
    #: ``none``.
    queue_sse: str = "sqs"
    queue_kms_key_id: str = ""

    @classmethod
    def from_config(cls, config: Config) -> "StandaloneSettings":
        return cls.from_section(config.section(SECTION))

    @classmethod
    def from_section(cls, section: Section) -> "StandaloneSettings":
        fields = set(cls.__dataclass_fields__)
        s = cls(**{setting.name: convert(setting, section.get(setting.name, setting.default),
                                         SECTION, section.origins.get(setting.name, ""))
                   for setting in SETTINGS if setting.name in fields})
        s.security_group_ids = list(s.security_group_ids or [])
        s.validate()
        return s

    def validate(self) -> None:
        if self.min_instances < 0 or self.max_instances < max(1, self.min_instances):
            raise ConfigError(
                f"[{SECTION}] needs 0 <= min_instances <= max_instances and max_instances >= 1 "
                f"(got min {self.min_instances}, max {self.max_instances})")
        if self.max_receives < 1:
            raise ConfigError(f"[{SECTION}] max_receives must be at least 1")
        if not 0 <= self.visibility_timeout <= 43200:
            raise ConfigError(f"[{SECTION}] visibility_timeout must be 0..43200 seconds")
        if not 1 <= self.batch_size <= 10:
            raise ConfigError(f"[{SECTION}] batch_size must be 1..10 (SQS's limit)")
        if self.queue_sse not in ("sqs", "kms", "none"):
            raise ConfigError(f"[{SECTION}] queue_sse must be 'sqs', 'kms' or 'none', not "
                              f"{self.queue_sse!r}")
        if self.numprocs < 0:
            raise ConfigError(f"[{SECTION}] numprocs must be >= 0 (0: one per core)")

    def queue_config(self) -> Dict[str, Any]:
        return {"name": self.queue_name, "region": self.region,
                "max_receives": self.max_receives,
                "visibility_timeout": self.visibility_timeout,
                "sse": "" if self.queue_sse == "none" else self.queue_sse,
                "kms_key_id": self.queue_kms_key_id}
