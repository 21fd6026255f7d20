"""Lambda's asynchronous Invoke at a fraction of ``client.invoke``'s client CPU.

``client.invoke`` spends about half a millisecond of CPU a request, most of it on work that
is the same for every call of a function. At chunksize 1 that is one request a call, the
larger part of a map's client CPU. :class:`EventInvoker` lets botocore make the first
Invoke of each function and re-signs copies of it for the later ones
(:class:`wrencore_aws.resend.Resender`, which says what stays as botocore does it); an
error is raised as the exception ``client.invoke`` would raise, so throttling is retried by
the caller as before.
"""

from __future__ import annotations

from typing import Any

from wrencore_aws.resend import SigV4, Template as _Template, Resender

__all__ = ["EventInvoker", "SigV4", "_Template"]


class EventInvoker:
    """Sends ``Invoke`` with ``InvocationType="Event"`` through ``client`` (a boto3 Lambda
    client), cheaply after each function's first request (see the module's docstring).

    Args:
        client: the boto3 Lambda client whose endpoint, credentials, events and HTTP session
            are used.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._resender = Resender(client, "Invoke", errors="raise", parse=False)
        self._templates = self._resender.templates

    def invoke(self, function_name: str, payload: bytes) -> None:
        """Invoke ``function_name`` asynchronously with ``payload``.

        Raises:
            botocore.exceptions.ClientError: Lambda refused it (the subclass ``client.invoke``
                raises, e.g. ``TooManyRequestsException``).
            botocore.exceptions.HTTPClientError: the request failed on the way.
        """
        def through_botocore() -> None:
            response = self.client.invoke(FunctionName=function_name, InvocationType="Event",
                                          Payload=payload)
            # Reading the (empty) body returns the connection to the pool.
            response["Payload"].read()

        self._resender.call(function_name, payload, through_botocore)

    def _template(self, request: Any, function_name: str) -> Any:
        body = request.body if isinstance(request.body, (bytes, bytearray)) else None
        return self._resender.template(request, function_name, bytes(body or b""))
