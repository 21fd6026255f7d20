"""Releasing an idle GCE instance to its managed instance group.

No emulator of Compute Engine exists, so two loopback HTTP servers stand in for Google's:
a metadata server (``GCE_METADATA_HOST``, the variable Google's own libraries honour) and
the Compute API's ``instanceGroupManagers.deleteInstances``. What is tested is what the
worker reads, the request it sends, and that the hook chain picks the right release.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from wrencore_gcp import instance as gce
from wrencore_runtime.daemon import DaemonSettings
from wrencore_workers.entry import from_hooks

GROUP = "projects/123456789/zones/europe-west1-b/instanceGroupManagers/wren-mig"


class Loopback:
    """A ThreadingHTTPServer on 127.0.0.1 answering from ``routes`` and recording requests."""

    def __init__(self, routes):
        self.routes, self.requests = routes, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.requests.append((self.command, self.path, dict(self.headers), body))
                status, payload = owner.routes.get((self.command, self.path), (404, "missing"))
                text = payload if isinstance(payload, str) else json.dumps(payload)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def metadata_routes(created_by=GROUP):
    base = "/computeMetadata/v1/"
    routes = {("GET", base + "project/project-id"): (200, "wren-project"),
              ("GET", base + "instance/zone"): (200, "projects/123456789/zones/europe-west1-b"),
              ("GET", base + "instance/name"): (200, "wren-mig-x7k2"),
              ("GET", base + "instance/service-accounts/default/token"):
                  (200, {"access_token": "ya29.token", "expires_in": 3599,
                         "token_type": "Bearer"})}
    if created_by:
        routes[("GET", base + "instance/attributes/created-by")] = (200, created_by)
    return routes


@pytest.fixture
def servers(monkeypatch):
    meta = Loopback(metadata_routes())
    compute = Loopback({("POST", "/compute/v1/projects/wren-project/zones/europe-west1-b/"
                                 "instanceGroupManagers/wren-mig/deleteInstances"):
                        (200, {"kind": "compute#operation", "name": "operation-1"})})
    monkeypatch.setenv("GCE_METADATA_HOST", meta.host)
    yield meta, compute
    meta.stop()
    compute.stop()


def settings(compute, provider=""):
    return DaemonSettings(queue={"class": "x:y"}, provider=provider, instance_id="wren-mig-x7k2",
                          provider_config={"compute_url": f"http://{compute.host}/compute/v1"})


def test_an_idle_managed_instance_deletes_itself_from_its_group(servers):
    meta, compute = servers
    _iid, _handlers, release = from_hooks(settings(compute))
    assert release("wren-mig-x7k2") is True
    ((method, path, headers, body),) = compute.requests
    assert method == "POST" and path.endswith("/instanceGroupManagers/wren-mig/deleteInstances")
    assert headers["Authorization"] == "Bearer ya29.token"
    assert json.loads(body) == {"instances": [
        "projects/wren-project/zones/europe-west1-b/instances/wren-mig-x7k2"]}
    assert all(h.get("Metadata-Flavor") == "Google" for _m, _p, h, _b in meta.requests)


def test_a_regional_group_is_addressed_by_its_region():
    instance = gce.ManagedInstance(
        "wren-project", "europe-west1-b", "vm-1",
        "projects/123/regions/europe-west1/instanceGroupManagers/wren-mig")
    assert instance.group_url_path == ("projects/wren-project/regions/europe-west1/"
                                       "instanceGroupManagers/wren-mig")


def test_an_instance_no_group_created_falls_to_the_plain_machine_release(servers):
    meta, compute = servers
    meta.routes = metadata_routes(created_by=None)  # created-by: 404
    _iid, _handlers, release = from_hooks(settings(compute))
    assert release("wren-mig-x7k2") is True  # the default: the workers just exit
    assert compute.requests == []


def test_an_instance_another_provider_launched_is_left_to_it(servers):
    meta, compute = servers
    from wrencore_gcp.plugin import wrencore_release_instance

    assert wrencore_release_instance(instance_id="i-1", config={"provider": "ec2"}) is None
    assert meta.requests == [] and compute.requests == []


def test_a_refused_deletion_raises_an_error_that_names_the_permission(servers):
    meta, compute = servers
    compute.routes = {}  # every request: 404
    _iid, _handlers, release = from_hooks(settings(compute))
    with pytest.raises(RuntimeError, match="compute.instanceGroupManagers.update"):
        release("wren-mig-x7k2")


def test_a_machine_that_is_no_gce_instance_asks_no_metadata_server(monkeypatch, tmp_path):
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    product = tmp_path / "product_name"
    product.write_text("Standard PC (Q35 + ICH9, 2009)\n")
    monkeypatch.setattr(gce, "GCE_PRODUCT_FILE", str(product))
    assert gce.managed_instance() is None
    product.write_text("Google Compute Engine\n")
    assert gce.on_gce()
