"""The Pub/Sub queue's depth: Cloud Monitoring's backlog when it can be read, else the
client's own view.

The emulator has no Monitoring, so the Monitoring path talks — through the real
google-cloud-monitoring client over gRPC — to a loopback server standing in for Google's
``MetricService.ListTimeSeries``: what is tested is the request the queue builds, how it
reads the answer, and how it falls back when Monitoring refuses.
"""

from __future__ import annotations

import sys
import time
from concurrent import futures

import grpc
import pytest

from wrencore_gcp import queue as pubsub


class FakeMetricService:
    """``google.monitoring.v3.MetricService/ListTimeSeries`` on 127.0.0.1."""

    def __init__(self):
        from google.cloud import monitoring_v3

        self.types = monitoring_v3
        self.requests = []
        self.answer = None  # a ListTimeSeriesResponse, or a grpc.StatusCode to fail with
        handler = grpc.method_handlers_generic_handler("google.monitoring.v3.MetricService", {
            "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                self._list, request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
                response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _list(self, request, context):
        self.requests.append(request)
        if isinstance(self.answer, grpc.StatusCode):
            context.abort(self.answer, "monitoring.timeSeries.list denied")
        return self.answer

    def client(self):
        from google.cloud.monitoring_v3.services.metric_service.transports.grpc import (
            MetricServiceGrpcTransport)

        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return self.types.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))

    def series(self, *points):
        """One time series holding ``(seconds ago, value)`` points."""
        now = time.time()
        return self.types.ListTimeSeriesResponse(time_series=[self.types.TimeSeries(points=[
            self.types.Point(interval={"end_time": {"seconds": int(now - ago)}},
                             value={"int64_value": value}) for ago, value in points])])


@pytest.fixture
def monitoring():
    service = FakeMetricService()
    yield service
    service.server.stop(None)


@pytest.fixture
def cloud_queue(monkeypatch, monitoring):
    """A queue as on Google Cloud (no emulator variable), with Monitoring on loopback."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    queue = pubsub.PubSubQueue("tasks", project="proj", create=False)
    queue._monitoring = monitoring.client()
    return queue


def test_the_backlog_request_names_the_subscriptions_metric_over_the_last_minutes():
    request = pubsub.backlog_request("proj", "tasks-workers", 1_000_000.5)
    assert request["name"] == "projects/proj"
    assert ('metric.type = "pubsub.googleapis.com/subscription/num_undelivered_messages"'
            in request["filter"])
    assert 'resource.labels.subscription_id = "tasks-workers"' in request["filter"]
    interval = request["interval"]
    assert interval["start_time"]["seconds"] <= 1_000_000 - 60 < 1_000_000 < \
        interval["end_time"]["seconds"]


def test_depth_is_the_newest_monitored_backlog_and_is_not_asked_for_again_at_once(
        cloud_queue, monitoring):
    monitoring.answer = monitoring.series((180, 9), (60, 4), (120, 7))
    assert cloud_queue.depth() == {"visible": 4, "in_flight": 0}
    (request,) = monitoring.requests
    assert request.name == "projects/proj"
    assert 'subscription_id = "tasks-workers"' in request.filter
    assert request.interval.end_time.timestamp() >= time.time() - 5
    monitoring.answer = monitoring.series((10, 0))
    assert cloud_queue.depth()["visible"] == 4  # Monitoring changes once a minute
    assert len(monitoring.requests) == 1


def test_a_refused_monitoring_falls_back_to_the_clients_view_and_is_left_alone(
        cloud_queue, monitoring):
    monitoring.answer = grpc.StatusCode.PERMISSION_DENIED
    cloud_queue._last_pulled = 2
    assert cloud_queue.depth() == {"visible": 2, "in_flight": 0}
    assert cloud_queue.monitored_backlog() is None
    assert len(monitoring.requests) == 1  # not asked again within BACKLOG_RETRY_AFTER


def test_without_google_cloud_monitoring_the_depth_is_the_clients_view(monkeypatch):
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setitem(sys.modules, "google.cloud.monitoring_v3", None)  # import fails
    queue = pubsub.PubSubQueue("tasks", project="proj", create=False)
    assert queue.monitoring is None
    assert queue.depth() == {"visible": 0, "in_flight": 0}


def test_on_the_emulator_the_depth_is_the_clients_view(pubsub_env):
    queue = pubsub.PubSubQueue("tasks", max_receives=5, ack_deadline=10)
    assert queue.monitoring is None and queue.monitored_backlog() is None
    queue.send_batch(["a", "b", "c"])
    got, last = [], []
    for _ in range(20):
        last = queue.receive(max_messages=10, wait_time=0.5)
        got += last
        if len(got) == 3:
            break
    assert queue.depth() == {"visible": len(last), "in_flight": 3}
    queue.delete_many(got)
    assert queue.receive(wait_time=0.5) == []
    assert queue.depth() == {"visible": 0, "in_flight": 0}
