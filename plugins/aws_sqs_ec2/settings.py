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

SECTION = "aws_sqs_ec2"


#: Integer keys and their allowed ranges (None: unbounded).
_INT_RANGES = (
    ("max_receives", 1, None), ("visibility_timeout", 0, 43200), ("min_instances", 0, None),
    ("max_instances", 1, None), ("numprocs", 0, None), ("batch_size", 1, 10),
    ("messages_per_instance", 1, None),
)


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
    #: Unused: instances install the runtime the client stored (kept so old configs load).
    install_spec: Optional[str] = None
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
        s = cls()
        for name in ("queue_name", "fleet", "instance_type", "ami", "instance_profile",
                     "key_name", "subnet_id", "log_group", "metadata_url", "region",
                     "install_spec", "platform", "task_key", "task_key_kms_key_id",
                     "queue_sse", "queue_kms_key_id"):
            setattr(s, name, section.str(name, getattr(s, name)))
        for name, low, high in _INT_RANGES:
            setattr(s, name, section.int(name, getattr(s, name), minimum=low, maximum=high))
        for name in ("idle_timeout", "min_uptime", "poll_wait", "dead_letter_check_interval",
                     "fleet_check_interval"):
            setattr(s, name, section.float(name, getattr(s, name), minimum=0))
        s.env_max_bytes = section.int("env_max_bytes", s.env_max_bytes, minimum=0)
        s.env_max_age = section.float("env_max_age", s.env_max_age, minimum=0)
        s.spot = section.bool("spot", s.spot)
        groups = section.get("security_group_ids", [])
        s.security_group_ids = ([g.strip() for g in groups.split(",") if g.strip()]
                                if isinstance(groups, str) else list(groups))
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
