"""Lambda's asynchronous Invoke at a fraction of ``client.invoke``'s client CPU.

``client.invoke`` spends about half a millisecond of CPU a request, most of it on work that
is the same for every call of a function: resolving the endpoint, serializing the
parameters, building the user agent, botocore's general-purpose SigV4 over its header
classes, parsing an empty response. At chunksize 1 that is one request a call, the larger
part of a map's client CPU.

:class:`EventInvoker` lets botocore make the first Invoke of each function as usual and
keeps the request it sent: its URL and headers, and the region and name it was signed for.
Every later Invoke of that function copies the request with its own payload, signs it with
SigV4 from the client's credentials (refreshed as botocore refreshes them) and sends it on
the client's own HTTP session, so endpoint configuration (``AWS_ENDPOINT_URL``…), the
connection pool, proxies and TLS settings are the client's. What stays as it was:

* each request emits the client's ``before-call.lambda.Invoke`` event, as botocore does, so
  request counters see every request, and a handler that answers with a response (as
  botocore's Stubber does) is used instead of sending;
* an error response is parsed by the client's parser and raised as the exception
  ``client.invoke`` would raise, so throttling is retried by the caller as before;
* a connection failure is botocore's exception (the client's HTTP session maps urllib3's).

A first request that is not plainly SigV4-signed over the payload keeps the function on
``client.invoke``.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import threading
import uuid
from typing import Any, Dict, Optional, Tuple

logger = logging.getLogger(__name__)

#: Headers botocore adds per request, or after signing; never copied from the template.
_PER_REQUEST = frozenset({"authorization", "x-amz-date", "x-amz-security-token",
                          "content-length", "amz-sdk-invocation-id", "amz-sdk-request",
                          "x-amz-content-sha256", "expect", "transfer-encoding"})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Template:
    """The Invoke request botocore built for one function, minus what changes per request."""

    def __init__(self, url: str, headers: Dict[str, str], region: str, signing_name: str):
        from urllib.parse import quote, urlsplit

        from botocore.auth import SIGNED_HEADERS_BLACKLIST, _host_from_url
        from botocore.utils import normalize_url_path

        self.url = url
        self.headers = headers
        self.region = region
        self.signing_name = signing_name
        self.host = _host_from_url(url)
        parts = urlsplit(url)
        self.path = parts.path
        self.canonical_uri = quote(normalize_url_path(parts.path), safe="/~")
        self.canonical_query = parts.query  # empty for Invoke; a query would need sorting
        self.unsigned = frozenset(SIGNED_HEADERS_BLACKLIST)


class SigV4:
    """AWS Signature Version 4 of a request whose shape is fixed, from refreshable credentials.

    The same algorithm as botocore's ``SigV4Auth`` (a test holds the two to the same
    signature), without its per-request URL parsing and header classes; the signing key is
    derived once a day per secret key.
    """

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials
        self._keys: Dict[Tuple[str, str, str, str], bytes] = {}

    def _key(self, secret: str, day: str, region: str, service: str) -> bytes:
        cache_key = (secret, day, region, service)
        key = self._keys.get(cache_key)
        if key is None:
            key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
            for part in (region, service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {cache_key: key}  # one day's key is all that is needed
        return key

    def sign(self, template: _Template, headers: Dict[str, str], body: bytes,
             now: Optional[datetime.datetime] = None) -> None:
        """Add ``X-Amz-Date``, the session token if any, and ``Authorization`` to ``headers``."""
        from botocore.exceptions import NoCredentialsError

        if self.credentials is None:
            raise NoCredentialsError()
        frozen = self.credentials.get_frozen_credentials()
        now = now or datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers["X-Amz-Date"] = stamp
        if frozen.token:
            headers["X-Amz-Security-Token"] = frozen.token
        signed = {"host": template.host}
        for name, value in headers.items():
            lower = name.lower()
            if lower not in template.unsigned and not lower.startswith("amz-sdk-"):
                signed[lower] = " ".join(value.split())
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "\n".join((
            "POST", template.canonical_uri, template.canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in names), signed_names,
            hashlib.sha256(body).hexdigest()))
        scope = f"{day}/{template.region}/{template.signing_name}/aws4_request"
        to_sign = "\n".join(("AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()))
        key = self._key(frozen.secret_key, day, template.region, template.signing_name)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
                                    f"SignedHeaders={signed_names}, Signature={signature}")


class EventInvoker:
    """Sends ``Invoke`` with ``InvocationType="Event"`` through ``client`` (a boto3 Lambda
    client), cheaply after each function's first request (see the module's docstring).

    Args:
        client: the boto3 Lambda client whose endpoint, credentials, events and HTTP session
            are used.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._model = client.meta.service_model.operation_model("Invoke")
        self._event = f"before-call.{client.meta.service_model.service_id.hyphenize()}.Invoke"
        self._signer = SigV4(client._get_credentials())
        self._templates: Dict[str, Optional[_Template]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        client.meta.events.register(f"before-send.{self._event.split('.', 1)[1]}",
                                    self._capture)

    def invoke(self, function_name: str, payload: bytes) -> None:
        """Invoke ``function_name`` asynchronously with ``payload``.

        Raises:
            botocore.exceptions.ClientError: Lambda refused it (the subclass ``client.invoke``
                raises, e.g. ``TooManyRequestsException``).
            botocore.exceptions.HTTPClientError: the request failed on the way.
        """
        template = self._templates.get(function_name)
        if template is None:
            self._invoke_with_botocore(function_name, payload)
            return
        headers = dict(template.headers)
        headers["amz-sdk-invocation-id"] = str(uuid.uuid4())
        params = {"url_path": template.path, "query_string": "", "method": "POST",
                  "headers": headers, "body": payload, "url": template.url,
                  "context": {"client_region": self.client.meta.region_name}}
        _, answer = self.client.meta.events.emit_until_response(
            self._event, model=self._model, params=params,
            request_signer=self.client._request_signer, context=params["context"])
        if answer is not None:  # a handler stood in for the service
            http, parsed = answer
            if http.status_code >= 300:
                self._raise(parsed)
            return
        headers, payload = params["headers"], params["body"]  # as handlers left them
        self._signer.sign(template, headers, payload)
        self._send(template, headers, payload)

    def _invoke_with_botocore(self, function_name: str, payload: bytes) -> None:
        self._local.capturing = function_name
        try:
            response = self.client.invoke(FunctionName=function_name, InvocationType="Event",
                                          Payload=payload)
        finally:
            self._local.capturing = None
        # Reading the (empty) body returns the connection to the pool.
        response["Payload"].read()

    def _capture(self, request: Any, **_: Any) -> None:
        """Keep the first request botocore sends for a function as that function's template
        (``before-send``; returning None lets botocore send it)."""
        function_name = getattr(self._local, "capturing", None)
        if function_name is None:
            return
        self._local.capturing = None  # a retry of the same request is no template
        with self._lock:
            if function_name in self._templates:
                return
            try:
                template = self._template(request, function_name)
            except Exception as exc:  # never fail the request botocore is sending
                logger.warning("Invoke of %s stays on client.invoke: %s", function_name, exc)
                template = None
            self._templates[function_name] = template

    def _template(self, request: Any, function_name: str) -> Optional[_Template]:
        from botocore.awsrequest import AWSPreparedRequest

        headers = {_text(k): _text(v) for k, v in request.headers.items()}
        authorization = headers.get("Authorization", "")
        signing = (getattr(request, "context", None) or {}).get("signing") or {}
        region = signing.get("region") or self.client.meta.region_name
        signing_name = signing.get("signing_name") or self._model.service_model.signing_name
        # Only a request signed with plain SigV4 over an in-memory body can be re-signed here.
        if (not isinstance(request, AWSPreparedRequest) or request.method != "POST"
                or not authorization.startswith("AWS4-HMAC-SHA256 ")
                or f"/{region}/{signing_name}/aws4_request" not in authorization
                or not isinstance(request.body, (bytes, bytearray))
                or "/." in request.url.split("?", 1)[0] or "?" in request.url):
            logger.debug("Invoke of %s stays on client.invoke: its request is not one this "
                         "module can re-sign", function_name)
            return None
        kept = {k: v for k, v in headers.items() if k.lower() not in _PER_REQUEST}
        template = _Template(request.url, kept, region, signing_name)
        # What the service will check: this module's signature of the request botocore sent
        # must be botocore's, or this function stays on client.invoke.
        check = dict(kept)
        stamp = datetime.datetime.strptime(headers.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ")
        self._signer.sign(template, check, bytes(request.body),
                          now=stamp.replace(tzinfo=datetime.timezone.utc))
        if check["Authorization"] != authorization:
            logger.warning("Invoke of %s stays on client.invoke: its request's signature "
                           "could not be reproduced", function_name)
            return None
        return template

    def _send(self, template: _Template, headers: Dict[str, str], payload: bytes) -> None:
        from botocore.awsrequest import AWSPreparedRequest

        # A plain dict: the header names are botocore's own, so no case-folding is needed.
        request = AWSPreparedRequest("POST", template.url, headers, payload, stream_output=False)
        response = self.client._endpoint.http_session.send(request)
        body = response.content  # read in full: the connection goes back to the pool
        if response.status_code >= 300:
            parsed = self.client._response_parser.parse(
                {"headers": response.headers, "status_code": response.status_code,
                 "body": body, "context": {"operation_name": "Invoke"}},
                self._model.output_shape)
            parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = response.status_code
            self._raise(parsed)

    def _raise(self, parsed: Dict[str, Any]) -> None:
        code = (parsed.get("Error") or {}).get("Code")
        raise self.client.exceptions.from_code(code)(parsed, "Invoke")
