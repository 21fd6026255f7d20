"""EventInvoker: Invoke requests re-signed from botocore's first one, on the Lambda harness."""

from __future__ import annotations

import datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import wrencore
from tests.request_counter import RequestCounter
from wrencore_aws.clients import error_code, is_throttling
from wrencore_aws_lambda.invoke import EventInvoker, SigV4, _Template

from . import workload

NOW = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("url, token", [
    ("http://127.0.0.1:4566/2015-03-31/functions/wrencore-abc/invocations", None),
    ("https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/"
     "arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Afn%3Alive/invocations",
     "session//token+="),
])
def test_signature_is_botocores(monkeypatch, url, token):
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    headers = {"X-Amz-Invocation-Type": "Event", "User-Agent": "Boto3/1.0  x",
               "Content-Type": " application/x-amz-json-1.0  "}
    body = b'{"calls": [1, 2, 3]}'
    template = _Template(url, headers, "eu-west-1", "lambda")
    ours = dict(headers)
    SigV4(credentials).sign(template, ours, body, now=NOW)

    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW.replace(tzinfo=None))
    request = AWSRequest(method="POST", url=url, headers=dict(headers), data=body)
    SigV4Auth(credentials.get_frozen_credentials(), "lambda", "eu-west-1").add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token")


def test_a_request_whose_signature_it_cannot_reproduce_stays_on_client_invoke():
    import boto3

    client = boto3.session.Session().client(
        "lambda", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    invoker = EventInvoker(client)
    url = "http://127.0.0.1:9/2015-03-31/functions/fn/invocations"
    request = AWSRequest(method="POST", url=url, data=b"{}",
                         headers={"X-Amz-Invocation-Type": "Event", "User-Agent": "test"})
    SigV4Auth(Credentials("AKIDEXAMPLE", "secret"), "lambda", "us-east-1").add_auth(request)
    request.headers["amz-sdk-request"] = "attempt=1; max=1"  # added after signing, unsigned
    assert isinstance(invoker._template(request.prepare(), "fn"), _Template)

    signed = request.headers["Authorization"]
    forged = signed[:-1] + ("0" if signed[-1] != "0" else "1")
    request.headers.replace_header("Authorization", forged)
    assert invoker._template(request.prepare(), "fn") is None


def test_invokes_after_the_first_are_re_signed_counted_and_throttled_as_before(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        backend = executor.backend
        counter = RequestCounter().attach([backend.client])
        futures = executor.map_futures(workload.square, range(30))
        assert wrencore.get_all_results(futures, timeout=120) == [x * x for x in range(30)]
        name = backend.function().name
        assert backend.invoker._templates[name] is not None  # the re-signed path was taken
        assert counter.of("Invoke") == 30
        assert lambda_env.stats()["invokes"]["Event"] == 30

        lambda_env.configure(throttle_rate=1.0)
        throttled = lambda_env.stats()["throttled"]
        with pytest.raises(backend.client.exceptions.TooManyRequestsException) as info:
            backend.invoker.invoke(name, b"{}")
        assert is_throttling(info.value) and error_code(info.value) == "TooManyRequestsException"
        assert lambda_env.stats()["throttled"] == throttled + 1
        assert counter.of("Invoke") == 31
        lambda_env.configure(throttle_rate=0.0)


def test_a_before_call_handler_that_answers_stands_in_for_the_service(lambda_env):
    from botocore.awsrequest import AWSResponse

    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        assert executor.submit(workload.square, 3).result(timeout=60) == 9
        backend = executor.backend
        name = backend.function().name
        invokes = lambda_env.stats()["invokes"]["Event"]
        answers = []

        def answer(**_):
            answers.append(1)
            return AWSResponse(None, 202, {}, None), {"StatusCode": 202}

        backend.client.meta.events.register("before-call.lambda.Invoke", answer)
        try:
            backend.invoker.invoke(name, b"{}")
        finally:
            backend.client.meta.events.unregister("before-call.lambda.Invoke", answer)
        assert answers == [1]
        assert lambda_env.stats()["invokes"]["Event"] == invokes
