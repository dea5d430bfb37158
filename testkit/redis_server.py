"""A redis-server of the test's own, on a free port in its own directory, which tests may kill and restart (as a
crash would), secure with a password, and the free ports the processes under test listen on."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from pathlib import Path

from testkit.polling import wait_until

PORT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def half_open(port: int, count: int) -> list[socket.socket]:
    """`count` connections to a local port that never send a byte (a slowloris flood); the caller closes them."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


class RedisServer:
    """A redis-server on a free port in its own directory, which tests may kill and restart."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        password: str | None = None,
        tls: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.directory = directory
        self.host = host  # the address it listens on (a namespace's own for a multi-host run)
        self.appendonly = appendonly
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}{self.host}:{self.port}/0?ssl_ca_certs={self.directory / 'cert.pem'}"
        return f"redis://{auth}{self.host}:{self.port}/0"

    def _security_args(self) -> list[str]:
        args = ["--requirepass", self.password] if self.password else []
        if self.tls:
            cert, key = self.directory / "cert.pem", self.directory / "key.pem"
            if not cert.exists():
                subprocess.run(
                    [
                        "openssl",
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        str(key),
                        "-out",
                        str(cert),
                        "-days",
                        "1",
                        "-subj",
                        f"/CN={self.host}",
                        "-addext",
                        f"subjectAltName=IP:{self.host}",
                    ],
                    check=True,
                    capture_output=True,
                )
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(cert),
                "--tls-auth-clients",
                "no",
            ]
        return args

    def start(self) -> None:
        """Start on `port`; a first start that finds the port taken (parallel test workers) takes another."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(PORT_ATTEMPTS):
            args = [binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.directory)]
            args += ["--save", "", "--appendonly", "yes" if self.appendonly else "no", "--logfile", "redis.log"]
            process = self.process = subprocess.Popen(
                [*args, *self._security_args()],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until(lambda: self.ping() or self.exited(), 10, 0.01, what=f"redis on {self.port}")
            if process.poll() is None:
                self._started = True
                return
            if self._started:
                break  # a restart keeps its port: the test holds its URL
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start (see {self.directory / 'redis.log'})")

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def ping(self) -> bool:
        if self.password or self.tls:
            import redis

            client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
            finally:
                client.close()
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self, *, empty: bool) -> None:
        """Kill and start again on the same port; `empty` wipes what it had on disk."""
        self.kill()
        if empty:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
