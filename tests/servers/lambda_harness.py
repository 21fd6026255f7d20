"""A Lambda execution harness for the tests: moto stores functions, awslambdaric runs them.

moto cannot execute Lambda code without Docker, so this process stands in front of it
(see ../shared/TESTING.md):

* an HTTP front on loopback forwards every Lambda API call to moto, keeps the ZipFile of
  CreateFunction/UpdateFunctionCode (by its CodeSha256), and answers Invoke itself:
  RequestResponse waits for the handler; Event returns 202 and runs in the background, at
  most ``concurrency`` at a time per function, like Lambda's asynchronous queue;
* layers are delivered as Lambda delivers them: PublishLayerVersion is forwarded to moto
  (which keeps no layer bytes), the harness keeps the zip (from the request, or from S3
  when the content is an S3 object) under the returned version ARN, and a sandbox of a
  function with layers has each layer's ``python/`` directory on its path after the
  function's own code, as Lambda extracts layers under ``/opt``;
* each sandbox is AWS's Runtime Interface Client (``python -m awslambdaric HANDLER``) in a
  separate virtualenv holding only awslambdaric and boto3, run from the unzipped package,
  talking to a Lambda Runtime API this process serves on its own loopback port;
* an Event invocation that fails is retried as its function's event invoke config says
  (``MaximumRetryAttempts``, AWS's default 2; after ``retry_delay`` instead of Lambda's
  minutes), and once its retries are exhausted its record — the original event as
  ``requestPayload``, the error as ``responsePayload`` — goes to the config's on-failure
  destination when that is an SQS queue (in moto), as Lambda sends it;
* the function's timeout is enforced (the sandbox is killed, as Lambda does); throttling
  (429 TooManyRequestsException) and crashes (the sandbox is killed mid-invocation) can be
  injected through ``POST /_harness/config``, and so can events altered on the way
  (``tamper_call_ids``: their signed body changes, their tag does not); ``GET /_harness/stats`` reports what happened;
* what a sandbox writes to stdout and stderr goes, line by line, to the harness's log file
  and — as Lambda ships it — to moto's CloudWatch Logs, group ``/aws/lambda/<function>``,
  one stream per sandbox;
* each sandbox holds the credentials of the function's execution role, as in Lambda: the
  harness assumes the role (STS AssumeRole, as the service ``lambda.amazonaws.com``, see
  tests/servers/moto_iam.py) and puts the session's keys in the sandbox's environment; the
  role's credentials also ship its logs, as Lambda writes logs with the execution role;
* with ``--authorize-invokes`` (moto with IAM enforcement, tests/servers/moto_iam.py) an
  Invoke is first sent to moto, signed as the caller signed it, to be authorized there.
  The harness's own requests (function configurations, layer content, role sessions) use
  ``LAMBDA_HARNESS_ACCESS_KEY_ID``/``LAMBDA_HARNESS_SECRET_ACCESS_KEY`` (default
  ``testing``), the identity the harness plays the Lambda service with.

Run: ``python -m tests.servers.lambda_harness --port P --moto URL --python VENV_PYTHON --work DIR``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import io
import json
import logging
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

logger = logging.getLogger("lambda_harness")

ASYNC_LIMIT = 256 * 1024
SYNC_LIMIT = 6 * 1024 * 1024
LAYER_VERSIONS_PATH = re.compile(r"^/2018-10-31/layers/([^/]+)/versions$")
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
FUNCTION_PATH = re.compile(r"^/2015-03-31/functions/([^/?]+)")


class Invocation:
    def __init__(self, payload: bytes, kind: str, attempt: int = 0):
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.kind = kind
        #: 0 for the first try of an event, then its retries.
        self.attempt = attempt
        #: The harness's generation (resets so far) when the event was sent.
        self.generation = 0
        self.done = threading.Event()
        self.response: Optional[bytes] = None
        self.error: Optional[Dict[str, Any]] = None
        self.call_ids = _call_ids(payload)


def _call_ids(payload: bytes) -> List[str]:
    """The call ids an event names: its calls, or for a signed reference to an event staged
    in storage (``{job}/payloads/{first call}[.attempt].json``), the chunk's first call."""
    try:
        message = json.loads(payload)
        if isinstance(message.get("body"), str):  # a signed envelope (wrencore_runtime.auth)
            message = json.loads(message["body"])
        if "/payloads/" in str(message.get("key", "")):
            return [message["key"].rsplit("/", 1)[1].split(".", 1)[0]]
        return [c.get("call_id") for c in message.get("calls", ())]
    except Exception:
        return []


def _tampered(payload: bytes) -> bytes:
    """The event with its signed body changed (a field added to the job), tag kept."""
    envelope = json.loads(payload)
    body = json.loads(envelope["body"])
    if "job" in body:
        body["job"]["tampered"] = True
    else:  # a reference to a staged event
        body["tampered"] = True
    envelope["body"] = json.dumps(body, separators=(",", ":"))
    return json.dumps(envelope).encode()


class Settings:
    """What tests may change at run time (``POST /_harness/config``)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        #: Probability that an Invoke is answered 429 TooManyRequestsException.
        self.throttle_rate = 0.0
        #: Call ids whose invocation gets its sandbox killed once the handler has started.
        self.crash_call_ids: List[str] = []
        #: Seconds between handing out such an invocation and killing its sandbox.
        self.crash_delay = 0.3
        #: Keep every event's payload (for tests that scan them; see Stats.events).
        self.record_events = False
        #: Call ids whose events are altered between Invoke and the sandbox.
        self.tamper_call_ids: List[str] = []
        #: Seconds before a failed event is retried (Lambda waits a minute, then two).
        self.retry_delay = 0.5
        self.seed = 0
        self.rng = random.Random(0)

    def update(self, values: Dict[str, Any]) -> None:
        for key, value in values.items():
            if not hasattr(self, key) or key == "rng":
                raise KeyError(key)
            setattr(self, key, value)
        if "seed" in values:
            self.rng = random.Random(values["seed"])


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.invokes = {"Event": 0, "RequestResponse": 0}
            self.throttled = 0
            self.completed = 0
            self.errors: List[Dict[str, Any]] = []
            self.sandboxes_started = 0
            self.functions_invoked: Dict[str, int] = {}
            self.events: List[str] = []
            #: Failure records sent to on-failure destinations: destination, call ids, error.
            self.failure_records: List[Dict[str, Any]] = []
            self.event_retries = 0

    def snapshot(self) -> Dict[str, Any]:
        with self.lock:
            return {"invokes": dict(self.invokes), "throttled": self.throttled,
                    "completed": self.completed, "errors": list(self.errors),
                    "sandboxes_started": self.sandboxes_started,
                    "functions_invoked": dict(self.functions_invoked),
                    "events": list(self.events),
                    "failure_records": list(self.failure_records),
                    "event_retries": self.event_retries}


def _die_with_parent() -> None:
    """In a sandbox before exec: get SIGKILL if the harness dies (Linux), so none outlives it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_client_lock = threading.Lock()


class LogShipper:
    """Writes a sandbox's log lines to the harness's log file and to CloudWatch Logs."""

    def __init__(self, harness: "Harness", group: str, stream: str, credentials: Dict[str, str]):
        self.harness, self.group, self.stream = harness, group, stream
        self.client = harness.log_client(credentials)
        self.lock = threading.Lock()

    def put(self, message: str) -> None:
        message = message.rstrip("\n")
        event = {"timestamp": int(time.time() * 1000), "message": message}
        client = self.client
        with self.lock:
            self.harness.log.write(message.encode() + b"\n")
            self.harness.log.flush()
            for _ in range(2):
                try:
                    client.put_log_events(logGroupName=self.group, logStreamName=self.stream,
                                          logEvents=[event])
                    return
                except client.exceptions.ResourceNotFoundException:  # new, or moto was reset
                    self._create()
                except Exception as exc:  # moto down: the log file still has the line
                    print(f"harness: shipping a log line failed: {exc}", file=sys.stderr)
                    return

    def _create(self) -> None:
        client = self.client
        for create in (lambda: client.create_log_group(logGroupName=self.group),
                       lambda: client.create_log_stream(logGroupName=self.group,
                                                        logStreamName=self.stream)):
            try:
                create()
            except client.exceptions.ResourceAlreadyExistsException:
                pass


class Sandbox:
    """One awslambdaric process and the Runtime API endpoint it polls."""

    def __init__(self, function: "FunctionRuntime"):
        self.function = function
        self.current: Optional[Invocation] = None
        self.deadline = 0.0
        self.kill_at: Optional[float] = None
        self.dead = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApiHandler)
        self.server.daemon_threads = True
        self.server.sandbox = self  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        env = dict(function.harness.worker_env)
        env.update(function.environment)
        env.update(function.credentials)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
            "LAMBDA_TASK_ROOT": function.task_root,
            "PYTHONPATH": os.pathsep.join([function.task_root] + [
                os.path.join(layer, "python") for layer in function.layer_roots]),
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"sandbox-{uuid.uuid4().hex[:8]}",
            "_HANDLER": function.handler,
            "TMPDIR": function.harness.tmp_dir,
        })
        # Log records go through the telemetry pipe, as in Lambda (not through stdout, which
        # a call's output capture redirects).
        telemetry_read, telemetry_write = os.pipe()
        env["_LAMBDA_TELEMETRY_LOG_FD"] = str(telemetry_write)
        harness = function.harness
        self.proc = subprocess.Popen(
            [harness.python, "-m", "awslambdaric", function.handler],
            cwd=function.task_root, env=env, stdout=subprocess.PIPE, pass_fds=(telemetry_write,),
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        os.close(telemetry_write)
        shipper = LogShipper(harness, env["AWS_LAMBDA_LOG_GROUP_NAME"],
                             env["AWS_LAMBDA_LOG_STREAM_NAME"], function.credentials)
        threading.Thread(target=harness.ship_lines, args=(self.proc.stdout, shipper),
                         daemon=True).start()
        threading.Thread(target=harness.ship_frames, args=(telemetry_read, shipper),
                         daemon=True).start()

    def next_invocation(self) -> Invocation:
        while True:
            if self.dead:
                raise ConnectionAbortedError("sandbox stopped")
            try:
                invocation = self.function.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if self.dead:  # killed while waiting: the event belongs to another sandbox
                self.function.events.put(invocation)
                raise ConnectionAbortedError("sandbox stopped")
            break
        self.current = invocation
        self.deadline = time.monotonic() + self.function.timeout
        if set(invocation.call_ids) & set(self.function.harness.settings.crash_call_ids):
            self.kill_at = time.monotonic() + self.function.harness.settings.crash_delay
        return invocation

    def finish(self, request_id: str, response: Optional[bytes],
               error: Optional[Dict[str, Any]]) -> None:
        invocation = self.current
        if invocation is None or invocation.request_id != request_id:
            return
        self.current = None
        self.kill_at = None
        self.function.harness.complete(self.function, invocation, response, error)

    def kill(self, error_type: str, message: str) -> None:
        if self.dead:
            return
        self.dead = True
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        self.server.shutdown()
        self.server.server_close()
        invocation, self.current = self.current, None
        if invocation is not None:
            self.function.harness.complete(self.function, invocation, None,
                                           {"errorType": error_type, "errorMessage": message})


class FunctionRuntime:
    """The sandboxes and event queue of one function version (name + code + configuration)."""

    def __init__(self, harness: "Harness", name: str, configuration: Dict[str, Any]):
        self.harness = harness
        self.name = name
        self.handler = configuration["Handler"]
        self.timeout = float(configuration.get("Timeout") or 3)
        self.memory = int(configuration.get("MemorySize") or 128)
        self.environment = dict((configuration.get("Environment") or {}).get("Variables") or {})
        self.credentials = harness.role_credentials(configuration["Role"])
        self.task_root = harness.unpack(configuration["CodeSha256"])
        self.layer_roots = [harness.unpack_layer(layer["Arn"])
                            for layer in configuration.get("Layers") or ()]
        self.events: "queue.Queue[Invocation]" = queue.Queue()
        self.sandboxes: List[Sandbox] = []
        self.lock = threading.Lock()
        self.last_used = time.monotonic()

    def submit(self, invocation: Invocation) -> None:
        self.last_used = time.monotonic()
        self.events.put(invocation)
        # Sandboxes are started only by the supervisor thread: PR_SET_PDEATHSIG fires when
        # the *thread* that forked a child exits, and request threads exit after each call.
        self.harness.wake.set()

    def scale(self) -> None:
        """Start sandboxes while events wait, up to the concurrency limit."""
        with self.lock:
            self.sandboxes = [s for s in self.sandboxes if not s.dead]
            busy = sum(1 for s in self.sandboxes if s.current is not None)
            wanted = min(self.harness.concurrency, busy + self.events.qsize())
            while len(self.sandboxes) < wanted:
                self.sandboxes.append(Sandbox(self))
                with self.harness.stats.lock:
                    self.harness.stats.sandboxes_started += 1

    def supervise(self) -> None:
        now = time.monotonic()
        with self.lock:
            sandboxes = list(self.sandboxes)
        for sandbox in sandboxes:
            if sandbox.dead:
                continue
            if sandbox.proc.poll() is not None:
                sandbox.kill("Runtime.ExitError",
                             f"RequestId: {getattr(sandbox.current, 'request_id', '-')} Error: "
                             f"Runtime exited with error: exit status {sandbox.proc.returncode}")
            elif sandbox.current is not None and sandbox.kill_at and now >= sandbox.kill_at:
                sandbox.kill("Runtime.ExitError", "Runtime exited with error: signal: killed")
            elif sandbox.current is not None and now >= sandbox.deadline:
                sandbox.kill("Sandbox.Timedout",
                             f"Task timed out after {self.timeout:.2f} seconds")
        self.scale()

    def stop(self) -> None:
        with self.lock:
            sandboxes, self.sandboxes = self.sandboxes, []
        for sandbox in sandboxes:
            sandbox.kill("Harness.Reset", "harness reset")


class Harness:
    #: How many functions' sandboxes a ``reset(keep_warm=True)`` keeps (most recently used).
    KEEP_WARM = 2

    def __init__(self, moto: str, python: str, work: str, concurrency: int,
                 authorize_invokes: bool = False):
        self.moto = urllib.parse.urlparse(moto)
        self.authorize_invokes = authorize_invokes
        #: The identity the harness plays the Lambda service with.
        self.access_key = (os.environ.get("LAMBDA_HARNESS_ACCESS_KEY_ID", "testing"),
                           os.environ.get("LAMBDA_HARNESS_SECRET_ACCESS_KEY", "testing"))
        self.python = python
        self.work = work
        self.concurrency = concurrency
        self.settings = Settings()
        self.stats = Stats()
        self.zips_dir = os.path.join(work, "zips")
        self.roots_dir = os.path.join(work, "task-roots")
        self.tmp_dir = os.path.join(work, "tmp")
        for d in (self.zips_dir, self.roots_dir, self.tmp_dir):
            os.makedirs(d, exist_ok=True)
        self.log = open(os.path.join(work, "sandboxes.log"), "ab")
        self.worker_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.tmp_dir,
            "AWS_ENDPOINT_URL": moto,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.functions: Dict[Tuple[str, str], FunctionRuntime] = {}
        self.configurations: Dict[str, Tuple[float, Dict[str, Any]]] = {}
        self.lock = threading.Lock()
        #: Incremented by each reset; a retry scheduled before it is dropped.
        self.generation = 0
        self.wake = threading.Event()
        threading.Thread(target=self._supervise, daemon=True).start()

    # -- logs ------------------------------------------------------------------------

    def client(self, service: str, credentials: Optional[Dict[str, str]] = None) -> Any:
        """A boto3 client for moto, as the harness (or with ``credentials``, an env dict)."""
        import boto3

        key, secret = self.access_key
        token = None
        if credentials:
            key, secret = credentials["AWS_ACCESS_KEY_ID"], credentials["AWS_SECRET_ACCESS_KEY"]
            token = credentials.get("AWS_SESSION_TOKEN")
        with _client_lock:  # a session per client: creating clients is not thread-safe
            return boto3.session.Session().client(
                service, endpoint_url=self.moto.geturl(), region_name="us-east-1",
                aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token)

    def log_client(self, credentials: Dict[str, str]) -> Any:
        return self.client("logs", credentials)

    def role_credentials(self, role_arn: str) -> Dict[str, str]:
        """A session of the function's execution role, as Lambda gives its sandboxes."""
        sts = self.client("sts")
        sts.meta.events.register("before-send.sts.AssumeRole", _as_lambda_service)
        try:
            session = sts.assume_role(RoleArn=role_arn,
                                      RoleSessionName="lambda-harness")["Credentials"]
        except Exception as exc:  # the sandbox then holds no valid credentials
            logger.warning("assuming the execution role %s failed: %s", role_arn, exc)
            return {}
        return {"AWS_ACCESS_KEY_ID": session["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": session["SecretAccessKey"],
                "AWS_SESSION_TOKEN": session["SessionToken"]}

    def ship_lines(self, pipe: Any, shipper: "LogShipper") -> None:
        """A sandbox's stdout and stderr, line by line, until it exits."""
        for line in iter(pipe.readline, b""):
            shipper.put(line.decode("utf-8", "replace"))

    def ship_frames(self, fd: int, shipper: "LogShipper") -> None:
        """A sandbox's telemetry frames (its log records), until it exits."""
        with os.fdopen(fd, "rb") as pipe:
            while True:
                header = pipe.read(16)
                if len(header) < 16:
                    return
                length = int.from_bytes(header[4:8], "big")
                shipper.put(pipe.read(length).decode("utf-8", "replace"))

    # -- code ------------------------------------------------------------------------
    def keep_zip(self, zip_b64: str) -> None:
        data = base64.b64decode(zip_b64)
        sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
        path = os.path.join(self.zips_dir, hashlib.sha256(sha.encode()).hexdigest() + ".zip")
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)

    def unpack(self, code_sha: str) -> str:
        return self._unpack_zip(hashlib.sha256(code_sha.encode()).hexdigest())

    def _unpack_zip(self, name: str) -> str:
        root = os.path.join(self.roots_dir, name)
        if not os.path.isdir(root):
            with open(os.path.join(self.zips_dir, name + ".zip"), "rb") as f:
                data = f.read()
            staging = root + f".{uuid.uuid4().hex}"
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                archive.extractall(staging)
            try:
                os.rename(staging, root)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
        return root

    def _layer_name(self, arn: str) -> str:
        return "layer-" + hashlib.sha256(arn.encode()).hexdigest()

    def keep_layer(self, arn: str, content: Dict[str, Any]) -> None:
        if content.get("ZipFile"):
            data = base64.b64decode(content["ZipFile"])
        else:
            s3 = self.client("s3")
            data = s3.get_object(Bucket=content["S3Bucket"], Key=content["S3Key"])["Body"].read()
        path = os.path.join(self.zips_dir, self._layer_name(arn) + ".zip")
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)

    def unpack_layer(self, arn: str) -> str:
        return self._unpack_zip(self._layer_name(arn))

    # -- moto --------------------------------------------------------------------------
    def forward(self, method: str, path: str, headers: Dict[str, str],
                body: bytes) -> Tuple[int, List[Tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.moto.hostname, self.moto.port, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def configuration(self, name: str) -> Tuple[int, Any]:
        with self.lock:
            cached = self.configurations.get(name)
        if cached and time.monotonic() - cached[0] < 1.0:
            return 200, cached[1]
        # moto routes a request to a service by the credential scope of its signature.
        path = f"/2015-03-31/functions/{urllib.parse.quote(name, safe='')}"
        status, _, body = self.forward("GET", path, self.signed("GET", path, "lambda"), b"")
        if status != 200:
            return status, body
        configuration = json.loads(body)["Configuration"]
        with self.lock:
            self.configurations[name] = (time.monotonic(), configuration)
        return 200, configuration

    def signed(self, method: str, path: str, service: str) -> Dict[str, str]:
        """Headers of a bodiless request to moto signed by the harness's identity."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        request = AWSRequest(method=method, url=self.moto.geturl() + path, data=b"")
        SigV4Auth(Credentials(*self.access_key), service, "us-east-1").add_auth(request)
        return dict(request.headers.items())

    def forget(self, name: str) -> None:
        with self.lock:
            self.configurations.pop(urllib.parse.unquote(name), None)

    def runtime_for(self, configuration: Dict[str, Any]) -> FunctionRuntime:
        key_data = json.dumps([configuration.get(k) for k in (
            "FunctionName", "CodeSha256", "Handler", "Timeout", "MemorySize", "Environment",
            "Layers")],
            sort_keys=True)
        key = (configuration["FunctionName"], hashlib.sha256(key_data.encode()).hexdigest())
        with self.lock:
            runtime = self.functions.get(key)
            if runtime is None:
                runtime = self.functions[key] = FunctionRuntime(
                    self, configuration["FunctionName"], configuration)
            return runtime

    # -- invocations -------------------------------------------------------------------
    def complete(self, function: FunctionRuntime, invocation: Invocation,
                 response: Optional[bytes], error: Optional[Dict[str, Any]]) -> None:
        invocation.response, invocation.error = response, error
        with self.stats.lock:
            self.stats.completed += 1
            if error is not None:
                self.stats.errors.append(dict(error, function=function.name,
                                              request_id=invocation.request_id,
                                              call_ids=invocation.call_ids))
        invocation.done.set()
        if invocation.kind == "Event" and error is not None:
            threading.Thread(target=self._event_failed, args=(function, invocation, error),
                             daemon=True).start()

    def _event_failed(self, function: FunctionRuntime, invocation: Invocation,
                      error: Dict[str, Any]) -> None:
        """Retry a failed event as its function's event invoke config says, then send its
        record to the on-failure destination (what Lambda's asynchronous queue does)."""
        generation = invocation.generation
        if generation != self.generation:
            return  # an event of before a reset (an earlier test's): gone with it
        config = self.event_invoke_config(function.name)
        retries = int((config or {}).get("MaximumRetryAttempts", 2))
        if invocation.attempt < retries:
            with self.stats.lock:
                self.stats.event_retries += 1
            retry = Invocation(invocation.payload, "Event", invocation.attempt + 1)
            retry.generation = generation

            def resubmit() -> None:
                if generation == self.generation:  # not after a reset (the next test's)
                    function.submit(retry)

            timer = threading.Timer(self.settings.retry_delay, resubmit)
            timer.daemon = True
            timer.start()
            return
        destination = (((config or {}).get("DestinationConfig") or {}).get("OnFailure")
                       or {}).get("Destination") or ""
        if ":sqs:" not in destination:
            return
        try:
            request_payload: Any = json.loads(invocation.payload)
        except ValueError:
            request_payload = invocation.payload.decode("utf-8", "replace")
        record = {
            "version": "1.0",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "requestContext": {
                "requestId": invocation.request_id,
                "functionArn": f"arn:aws:lambda:us-east-1:123456789012:function:"
                               f"{function.name}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": invocation.attempt + 1},
            "requestPayload": request_payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                                "functionError": "Unhandled"},
            "responsePayload": error,
        }
        try:
            sqs = self.sqs_client()
            url = sqs.get_queue_url(QueueName=destination.rsplit(":", 1)[-1])["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
        except Exception as exc:  # Lambda drops the record too when it cannot deliver it
            print(f"harness: sending a failure record to {destination} failed: {exc}",
                  file=sys.stderr)
            return
        with self.stats.lock:
            self.stats.failure_records.append({
                "function": function.name, "destination": destination,
                "call_ids": invocation.call_ids, "error": error})

    def event_invoke_config(self, name: str) -> Optional[Dict[str, Any]]:
        """The function's event invoke config in moto, None if it has none."""
        authorization = ("AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/lambda/"
                         "aws4_request, SignedHeaders=host, Signature=0")
        status, _, body = self.forward(
            "GET", f"/2019-09-25/functions/{urllib.parse.quote(name)}/event-invoke-config",
            {"Authorization": authorization}, b"")
        return json.loads(body) if status == 200 else None

    def sqs_client(self) -> Any:
        import boto3

        with _client_lock:
            return boto3.session.Session().client(
                "sqs", endpoint_url=self.moto.geturl(), region_name="us-east-1",
                aws_access_key_id="testing", aws_secret_access_key="testing")

    def _supervise(self) -> None:
        while True:
            self.wake.wait(0.05)
            self.wake.clear()
            with self.lock:
                runtimes = list(self.functions.values())
            for runtime in runtimes:
                try:
                    runtime.supervise()
                except Exception:
                    logger.exception("supervising %s failed", runtime.name)

    def reset(self, keep_warm: bool = False) -> None:
        """Forget settings and stats; stop the sandboxes unless ``keep_warm`` (like Lambda,
        which keeps an idle sandbox of an unchanged function for later invocations)."""
        with self.lock:
            self.configurations.clear()
            by_use = sorted(self.functions.items(), key=lambda item: item[1].last_used)
            kept = by_use[-self.KEEP_WARM:] if keep_warm else []
            runtimes = [runtime for _, runtime in by_use[:len(by_use) - len(kept)]]
            self.functions = dict(kept)
        for runtime in runtimes:
            runtime.stop()
        self.generation += 1  # pending retries of failed events are dropped
        self.settings.reset()
        self.stats.reset()


def _as_lambda_service(request: Any, **_: Any) -> None:
    from .moto_iam import SERVICE_PRINCIPAL

    request.headers[SERVICE_PRINCIPAL] = "lambda.amazonaws.com"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every warm invoke costs ~90 ms (Nagle + delayed ACK)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug(format, *args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


class RuntimeApiHandler(_Handler):
    """The Lambda Runtime API of one sandbox."""

    def do_GET(self) -> None:
        sandbox: Sandbox = self.server.sandbox  # type: ignore[attr-defined]
        if not self.path.endswith("/runtime/invocation/next"):
            return self._send(404, b'{"errorMessage": "not found"}')
        invocation = sandbox.next_invocation()
        deadline_ms = int((time.time() + sandbox.function.timeout) * 1000)
        self._send(200, invocation.payload, {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn":
                f"arn:aws:lambda:us-east-1:123456789012:function:{sandbox.function.name}",
            "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
        })

    def do_POST(self) -> None:
        sandbox: Sandbox = self.server.sandbox  # type: ignore[attr-defined]
        body = self._body()
        parts = self.path.strip("/").split("/")
        if parts[-2:] == ["init", "error"]:
            logger.warning("init error in %s: %s", sandbox.function.name, body[:2000])
            self._send(202, b'{"status": "OK"}')
            sandbox.kill("Runtime.InitError", body.decode(errors="replace"))
            return
        if len(parts) >= 5 and parts[-1] in ("response", "error"):
            request_id = parts[-2]
            self._send(202, b'{"status": "OK"}')
            if parts[-1] == "response":
                sandbox.finish(request_id, body, None)
            else:
                try:
                    error = json.loads(body)
                except ValueError:
                    error = {"errorMessage": body.decode(errors="replace")}
                sandbox.finish(request_id, None, error)
            return
        self._send(404, b'{"errorMessage": "not found"}')


class FrontHandler(_Handler):
    """The Lambda API: Invoke answered here, everything else forwarded to moto."""

    @property
    def harness(self) -> Harness:
        return self.server.harness  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        if self.path == "/_harness/stats":
            return self._send(200, json.dumps(self.harness.stats.snapshot()).encode())
        self._forward(b"")

    def do_DELETE(self) -> None:
        self._forward(self._body())

    def do_PUT(self) -> None:
        body = self._body()
        if self.path.split("?")[0].endswith("/code"):
            self._keep_zip(body)
        self._forward(body)

    def do_POST(self) -> None:
        body = self._body()
        path = self.path.split("?")[0]
        if path == "/_harness/config":
            try:
                self.harness.settings.update(json.loads(body or b"{}"))
            except (KeyError, ValueError) as exc:
                return self._send(400, json.dumps({"error": f"bad setting {exc}"}).encode())
            return self._send(200, b"{}")
        if path == "/_harness/reset":
            self.harness.reset(keep_warm=bool(json.loads(body or b"{}").get("keep_warm")))
            return self._send(200, b"{}")
        match = INVOKE_PATH.match(path)
        if match:
            return self._invoke(urllib.parse.unquote(match.group(1)), body)
        if LAYER_VERSIONS_PATH.match(path):
            return self._publish_layer(body)
        if path.rstrip("/") == "/2015-03-31/functions":
            self._keep_zip(body)
        self._forward(body)

    def _forwarded_headers(self) -> Dict[str, str]:
        """The caller's headers, Host included: moto checks the signature, which covers it."""
        return {k: v for k, v in self.headers.items()
                if k.lower() not in ("content-length", "connection")}

    def _authorized(self, body: bytes) -> bool:
        """Ask moto whether the caller may invoke (answering the caller if not)."""
        from .moto_iam import AUTHORIZE_ONLY

        headers = dict(self._forwarded_headers(), **{AUTHORIZE_ONLY: "1"})
        status, response_headers, response_body = self.harness.forward(
            self.command, self.path, headers, body)
        if 200 <= status < 300:
            return True
        self._relay(status, response_headers, response_body)
        return False

    def _keep_zip(self, body: bytes) -> None:
        try:
            document = json.loads(body)
        except ValueError:
            return
        code = document.get("Code", document) if isinstance(document, dict) else {}
        if isinstance(code, dict) and code.get("ZipFile"):
            self.harness.keep_zip(code["ZipFile"])

    def _publish_layer(self, body: bytes) -> None:
        headers = self._forwarded_headers()
        status, response_headers, response_body = self.harness.forward(
            self.command, self.path, headers, body)
        if status in (200, 201):
            arn = json.loads(response_body)["LayerVersionArn"]
            self.harness.keep_layer(arn, json.loads(body).get("Content") or {})
        content_type = next((v for k, v in response_headers if k.lower() == "content-type"),
                            "application/json")
        self._send(status, response_body, {}, content_type)

    def _forward(self, body: bytes) -> None:
        match = FUNCTION_PATH.match(self.path)
        if match and self.command != "GET":
            self.harness.forget(match.group(1))
        headers = self._forwarded_headers()
        status, response_headers, response_body = self.harness.forward(
            self.command, self.path, headers, body)
        self._relay(status, response_headers, response_body)

    def _relay(self, status: int, response_headers: Any, response_body: bytes) -> None:
        """Answer the caller with moto's response (its own framing headers left out)."""
        passed = {k: v for k, v in response_headers
                  if k.lower() not in ("content-length", "connection", "transfer-encoding",
                                       "content-type", "server", "date")}
        content_type = next((v for k, v in response_headers if k.lower() == "content-type"),
                            "application/json")
        self._send(status, response_body, passed, content_type)

    def _error(self, status: int, error_type: str, message: str) -> None:
        body = json.dumps({"Type": "User", "message": message}).encode()
        self._send(status, body, {"x-amzn-ErrorType": error_type,
                                  "x-amzn-RequestId": str(uuid.uuid4())})

    def _invoke(self, name: str, payload: bytes) -> None:
        harness = self.harness
        kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if harness.authorize_invokes and not self._authorized(payload):
            return
        name = name.rsplit(":", 1)[-1] if name.startswith("arn:") else name
        settings = harness.settings
        if settings.throttle_rate and settings.rng.random() < settings.throttle_rate:
            with harness.stats.lock:
                harness.stats.throttled += 1
            return self._error(429, "TooManyRequestsException", "Rate Exceeded.")
        limit = ASYNC_LIMIT if kind == "Event" else SYNC_LIMIT
        if len(payload) > limit:
            return self._error(413, "RequestEntityTooLargeException",
                               f"{len(payload)} byte payload is too large for the {kind} "
                               f"invocation type (limit {limit} bytes)")
        status, configuration = harness.configuration(name)
        if status != 200:
            return self._send(status, configuration if isinstance(configuration, bytes) else b"",
                              {"x-amzn-ErrorType": "ResourceNotFoundException"})
        try:
            runtime = harness.runtime_for(configuration)
        except Exception as exc:
            logger.exception("starting %s failed", name)
            return self._error(500, "ServiceException", f"the harness failed: {exc}")
        if set(_call_ids(payload)) & set(settings.tamper_call_ids):
            payload = _tampered(payload)
        invocation = Invocation(payload, kind)
        invocation.generation = harness.generation
        with harness.stats.lock:
            harness.stats.invokes[kind] = harness.stats.invokes.get(kind, 0) + 1
            harness.stats.functions_invoked[name] = harness.stats.functions_invoked.get(name, 0) + 1
            if settings.record_events:
                harness.stats.events.append(payload.decode("utf-8", "replace"))
        runtime.submit(invocation)
        if kind == "Event":
            return self._send(202, b"", {"x-amzn-RequestId": invocation.request_id})
        invocation.done.wait(runtime.timeout + 30)
        if invocation.error is not None:
            return self._send(200, json.dumps(invocation.error).encode(), {
                "X-Amz-Function-Error": "Unhandled", "X-Amz-Executed-Version": "$LATEST",
                "x-amzn-RequestId": invocation.request_id})
        self._send(200, invocation.response or b"null", {
            "X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": invocation.request_id})


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--moto", required=True, help="moto's endpoint URL")
    parser.add_argument("--python", required=True, help="python of the awslambdaric venv")
    parser.add_argument("--work", required=True, help="directory for zips and task roots")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="sandboxes per function (Lambda's concurrency limit)")
    parser.add_argument("--authorize-invokes", action="store_true",
                        help="have moto authorize every Invoke (moto_iam.py's server)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    harness = Harness(args.moto, args.python, args.work, args.concurrency,
                      args.authorize_invokes)
    server = _FrontServer(("127.0.0.1", args.port), FrontHandler)
    server.harness = harness  # type: ignore[attr-defined]

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        harness.reset()


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------------------
# Used by the test fixtures and the benchmark (in the test process)
# ----------------------------------------------------------------------------------------

#: What the sandboxes' Python holds: what AWS's Python runtime has.
SANDBOX_REQUIREMENTS = ("awslambdaric", "boto3")


def sandbox_python(cache_root: Optional[str] = None) -> str:
    """A virtualenv with only awslambdaric and boto3, built once with pip and cached."""
    import fcntl

    cache_root = cache_root or os.environ.get("WRENCORE_TEST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "wrencore-tests")
    tag = hashlib.sha256(" ".join(SANDBOX_REQUIREMENTS).encode()).hexdigest()[:12]
    venv = os.path.join(cache_root, f"lambda-sandbox-py{sys.version_info[0]}{sys.version_info[1]}-{tag}")
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".complete")
    os.makedirs(cache_root, exist_ok=True)
    with open(os.path.join(cache_root, f".{os.path.basename(venv)}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(marker):
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            *SANDBOX_REQUIREMENTS], check=True)
            open(marker, "w").close()
    return python


class LambdaHarness:
    """The harness as a subprocess on a free loopback port, and its control API."""

    def __init__(self, moto_endpoint: str, work: str, concurrency: int = 4,
                 python: Optional[str] = None, authorize_invokes: bool = False,
                 access_key: Optional[Tuple[str, str]] = None):
        """``access_key``: the identity the harness plays the Lambda service with (its own
        requests to moto: configurations, layer content, the execution roles' sessions)."""
        from . import procs

        self.port = procs.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(os.path.join(work, "harness.log"), "ab")
        repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        if access_key:
            env.update(LAMBDA_HARNESS_ACCESS_KEY_ID=access_key[0],
                       LAMBDA_HARNESS_SECRET_ACCESS_KEY=access_key[1])
        self.proc = procs.start(
            [sys.executable, "-m", "tests.servers.lambda_harness", "--port", str(self.port),
             "--moto", moto_endpoint, "--python", python or sandbox_python(), "--work", work,
             "--concurrency", str(concurrency)]
            + (["--authorize-invokes"] if authorize_invokes else []),
            cwd=repo_root, stdout=self._log, stderr=self._log, env=env)
        procs.wait_until(lambda: procs.port_open(self.port), 30, "lambda harness", self.proc)

    def _request(self, method: str, path: str, data: Optional[Dict[str, Any]] = None) -> Any:
        import urllib.request

        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(self.endpoint + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def configure(self, **settings: Any) -> None:
        self._request("POST", "/_harness/config", settings)

    def reset(self, keep_warm: bool = False) -> None:
        self._request("POST", "/_harness/reset", {"keep_warm": keep_warm})

    def stats(self) -> Dict[str, Any]:
        return self._request("GET", "/_harness/stats")

    def stop(self) -> None:
        from . import procs

        procs.stop(self.proc)
        self._log.close()
