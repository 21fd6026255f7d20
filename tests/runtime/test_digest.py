"""Digests of stored objects, and how little a worker loads before its first call."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from wrencore_runtime import auth
from wrencore_runtime.digest import SMALL, check_digest, sha256_hex
from wrencore_runtime.errors import IntegrityError


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL + 7])
def test_sha256_hex_is_sha256_on_both_sides_of_the_small_size(size):
    data = bytes(i % 251 for i in range(size))
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_check_digest_refuses_changed_data_and_auth_still_exports_both():
    check_digest(b"job", hashlib.sha256(b"job").hexdigest(), "the function")
    check_digest(b"job", None, "the function")  # nothing to check against
    with pytest.raises(IntegrityError, match="the function in storage does not match"):
        check_digest(b"job!", hashlib.sha256(b"job").hexdigest(), "the function")
    assert (auth.sha256_hex, auth.check_digest) == (sha256_hex, check_digest)


#: What neither the fork server nor a worker needs before its first call. cloudpickle and
#: what it imports come later (``wrencore_local.forkserver._preload_later``): a plain
#: function sent by value is rebuilt without them (``wrencore_runtime.sources``).
NOT_PRELOADED = ["wrencore", "wrencore_runtime.auth", "hashlib", "_hashlib", "hmac", "socket",
                 "subprocess", "zipfile", "tempfile", "shutil", "secrets", "cloudpickle",
                 "dataclasses", "inspect", "typing", "platform", "uuid"]


def _loaded_modules(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd="/")
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_fork_server_preloads_only_what_a_worker_needs():
    # Measured against a bare interpreter of the same environment: a site's .pth files may
    # load some of these at every start (CI's interpreter loads importlib.resources, and with
    # it zipfile, tempfile and shutil), and those are not the fork server's doing.
    at_start = _loaded_modules("pass")
    preloaded = _loaded_modules("import wrencore_local.forkserver, wrencore_local.worker, "
                                "wrencore_runtime.sources")
    assert "wrencore_local.worker" in preloaded and "wrencore_runtime.sources" in preloaded
    assert sorted((preloaded - at_start) & set(NOT_PRELOADED)) == []


def test_a_worker_reads_the_serializer_version_without_importing_cloudpickle():
    import cloudpickle

    out = subprocess.run([sys.executable, "-c",
                          "import sys\nfrom wrencore_runtime.protocol import SERIALIZER\n"
                          "print(SERIALIZER, 'cloudpickle' in sys.modules)"],
                         capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.split() == ["cloudpickle", cloudpickle.__version__, "False"]
