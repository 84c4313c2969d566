"""S3-protocol servers on loopback for the tests: OpenStack Swift with s3api, or moto.

Swift (Debian ``swift-proxy``, ``swift-account``, ``swift-container``, ``swift-object``)
is the real distributed object store: its four servers run from a temporary folder
(rings built with ``swift-ring-builder``, one replica, tempauth user ``test:tester`` /
``testing``, the s3api and SLO middlewares for S3 and multipart uploads). moto's
standalone server (``moto[server]``) is the in-process alternative; it decides
conditional puts the way Amazon S3 does. The blob store tests run on both; Swift is
skipped where its packages are not installed.

    with swift_server(tmp_path) as server:      # or moto_server()
        bucket = server.make_bucket()
        store = S3BlobStore(bucket, endpoint_url=server.endpoint_url)   # AWS_* from server.env
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .server_util import free_port

__all__ = ["S3Server", "moto_server", "swift_available", "swift_server"]

_SWIFT_SERVERS = ("account", "container", "object")
_SWIFT_BINARIES = ("swift-ring-builder", "swift-proxy-server", "swift-account-server", "swift-container-server", "swift-object-server")


@dataclass
class S3Server:
    """A running S3 endpoint and the credentials it accepts."""

    kind: str
    endpoint_url: str
    access_key: str = "test:tester"
    secret_key: str = "testing"

    @property
    def env(self) -> dict[str, str]:
        """The standard variables boto3 reads its credentials and region from."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )

    def make_bucket(self) -> str:
        name = f"t{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        """Delete a bucket and everything in it (unfinished multipart uploads too)."""
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", ()):
                client.delete_object(Bucket=name, Key=item["Key"])
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", ()):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        if self.kind == "swift":
            # SLO keeps multipart segments in a hidden "+segments" container.
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                for item in page.get("Contents", ()):
                    client.delete_object(Bucket=name, Key=item["Key"])
        try:
            client.delete_bucket(Bucket=name)
        except Exception:  # a Swift segments container not yet empty: the folder goes anyway
            pass


def swift_available() -> bool:
    return all(shutil.which(name) for name in _SWIFT_BINARIES)


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """moto's standalone S3 server in a thread on a free loopback port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server("moto", f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def _swift_conf(folder: Path, user: str, ports: dict[str, int]) -> None:
    etc, node = folder / "etc", folder / "node"
    (node / "sdb1").mkdir(parents=True)
    etc.mkdir()
    (etc / "swift.conf").write_text(
        "[swift-hash]\nswift_hash_path_suffix = dcmstream-tests\nswift_hash_path_prefix = dcmstream-tests\n"
        "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
    )
    for name in _SWIFT_SERVERS:
        builder = str(etc / f"{name}.builder")
        for args in (["create", "6", "1", "1"], ["add", f"r1z1-127.0.0.1:{ports[name]}/sdb1", "1"], ["rebalance"]):
            subprocess.run(["swift-ring-builder", builder, *args], check=True, capture_output=True, timeout=60)
        (etc / f"{name}-server.conf").write_text(
            f"[DEFAULT]\ndevices = {node}\nmount_check = false\nbind_ip = 127.0.0.1\nbind_port = {ports[name]}\n"
            f"workers = 0\nswift_dir = {etc}\nuser = {user}\nlog_level = WARNING\n"
            f"[pipeline:main]\npipeline = {name}-server\n[app:{name}-server]\nuse = egg:swift#{name}\n"
            f"[{name}-replicator]\n[{name}-updater]\n[{name}-auditor]\n"
        )
    (etc / "proxy-server.conf").write_text(
        f"[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {ports['proxy']}\nworkers = 0\nswift_dir = {etc}\nuser = {user}\n"
        "log_level = WARNING\n"
        "[pipeline:main]\npipeline = catch_errors healthcheck proxy-logging cache s3api tempauth slo proxy-logging proxy-server\n"
        "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n"
        "[filter:catch_errors]\nuse = egg:swift#catch_errors\n"
        "[filter:healthcheck]\nuse = egg:swift#healthcheck\n"
        "[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n"
        # No memcached here: tempauth and s3api work without one (a dead address is cheap).
        "[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:1\n"
        "[filter:s3api]\nuse = egg:swift#s3api\n"
        "[filter:tempauth]\nuse = egg:swift#tempauth\nuser_test_tester = testing .admin\n"
        "[filter:slo]\nuse = egg:swift#slo\n"
    )


@contextmanager
def swift_server(folder: Path, timeout: float = 60.0) -> Iterator[S3Server]:
    """OpenStack Swift (proxy with s3api + account, container and object servers) from
    ``folder``; every process is stopped when the block ends."""
    ports = {name: free_port() for name in (*_SWIFT_SERVERS, "proxy")}
    user = "root" if os.geteuid() == 0 else getpass.getuser()
    _swift_conf(folder, user, ports)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in (*_SWIFT_SERVERS, "proxy"):
            log = open(folder / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
            processes.append(subprocess.Popen(
                [f"swift-{name}-server", str(folder / "etc" / f"{name}-server.conf")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))
            log.close()
        endpoint = f"http://127.0.0.1:{ports['proxy']}"
        server = S3Server("swift", endpoint)
        _wait_until_ready(server, processes, folder, timeout)
        yield server
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _wait_until_ready(server: S3Server, processes: list[subprocess.Popen[bytes]], folder: Path, timeout: float) -> None:
    """Until an S3 request through the proxy reaches the object server (bucket round trip)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        dead = [p for p in processes if p.poll() is not None]
        if dead:
            logs = "\n".join(f"{p.name}:\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*.log")))
            raise RuntimeError(f"a Swift server exited ({dead[0].args}):\n{logs}")
        try:
            bucket = server.make_bucket()
            client = server.client()
            client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            server.drop_bucket(bucket)
            return
        except Exception as exc:  # not listening yet
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"Swift did not come up in {timeout} s: {last}")
