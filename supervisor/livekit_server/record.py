"""The embedded livekit-server's runtime record: which process serves a port, for which
supervisor, with which credentials.

`supervisor run` writes it once its embedded server answers and removes it when the
server stops. It serves two readers in other processes: `supervisor token` mints
tokens with its credentials, and a later `supervisor run` on the same port recognises
a server that an earlier run left behind. The server dies with the supervisor that
started it (`LiveKitServer`), so a leftover is rare: a kernel that did not deliver the
parent-death signal, or a process tree frozen and thawed; but when there is one, the
deployment must not stay down until someone kills it by hand.

A leftover is stopped, and a fresh server started, rather than reused: only a child
can be tied to our lifetime (the parent-death signal is set at the fork), so a reused
orphan would outlive this supervisor too and be left behind again; its rooms live in
its memory and the supervisor recreates them anyway, its credentials belong to a run
that is over, and its config is whatever the version that started it wrote. The
price is about a second of start-up and the disconnection of clients still on it,
whose bots are gone already.

Nothing is stopped unless everything matches: the record is a regular file of our
user (not a link), its pid runs with the recorded start time (a reused pid has
another), the process is a livekit-server of our user, and the supervisor that wrote
the record is gone (its pid and start time): a live supervisor's server, such as the
one the `--workers` parent shares with its workers, is in use, not left behind. A
process listening on the port that does not match is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import stat
import tempfile
from pathlib import Path

import attrs

from supervisor.livekit_server.server import stop_in_order

log = logging.getLogger("supervisor")

SERVER_EXECUTABLE = "livekit-server"


@attrs.frozen
class ProcessId:
    """A process for good: a pid is reused after the process ends, a pid with its start
    time (clock ticks after boot, /proc/PID/stat) is not."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        """The process with this pid, if one runs (a zombie has ended)."""
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = text.rpartition(")")[2].split()  # the name in parentheses may hold spaces
        if fields[0] in ("Z", "X"):
            return None
        return cls(pid, int(fields[19]))  # field 22, counted after pid and name

    @classmethod
    def current(cls) -> ProcessId:
        me = cls.of(os.getpid())
        assert me is not None
        return me

    def alive(self) -> bool:
        return ProcessId.of(self.pid) == self

    def is_our_livekit_server(self) -> bool:
        """Whether this very process runs and is a livekit-server of our user."""
        try:
            exe = os.readlink(f"/proc/{self.pid}/exe").removesuffix(" (deleted)")
            uid = os.stat(f"/proc/{self.pid}").st_uid
        except OSError:
            return False
        return Path(exe).name == SERVER_EXECUTABLE and uid == os.getuid() and self.alive()


@attrs.frozen
class ServerRecord:
    port: int
    server: ProcessId
    owner: ProcessId
    """The supervisor that started the server."""
    api_key: str
    api_secret: str = attrs.field(repr=False)

    def write(self, path: Path) -> None:
        """Write the record, readable by our user only.

        Written beside and renamed over `path`, so a reader never sees half a record
        and a link planted at a predictable name in a shared temp folder is replaced,
        not followed.
        """
        fd, name = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "w") as out:
            json.dump(
                {
                    "port": self.port,
                    "pid": self.server.pid,
                    "start_time": self.server.start_time,
                    "owner_pid": self.owner.pid,
                    "owner_start_time": self.owner.start_time,
                    "api_key": self.api_key,
                    "api_secret": self.api_secret,
                },
                out,
            )
        os.replace(name, path)

    @classmethod
    def read(cls, path: Path) -> ServerRecord | None:
        """The record at `path`, or None: absent, unreadable, not a regular file of our
        user, or not a record (such as the credentials-only file of older versions).

        Opened without following a link or waiting on a pipe: the temp folder is shared.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        with os.fdopen(fd) as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                return None
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                saved = json.load(file)
                return cls(
                    port=int(saved["port"]),
                    server=ProcessId(int(saved["pid"]), int(saved["start_time"])),
                    owner=ProcessId(int(saved["owner_pid"]), int(saved["owner_start_time"])),
                    api_key=str(saved["api_key"]),
                    api_secret=str(saved["api_secret"]),
                )
        return None

    def serving(self) -> bool:
        """Whether the recorded server still runs."""
        return self.server.is_our_livekit_server()

    def stop_server(self, timeout: float = 5.0) -> None:
        """Stop the recorded server in order (it is not our child: no wait() for it).

        A pidfd names the process itself, not its pid: checked once it is open, every
        signal reaches that very process even if it ends and its pid is reused meanwhile.
        """
        try:
            pidfd = os.pidfd_open(self.server.pid)
        except ProcessLookupError:
            return
        try:
            if not self.server.is_our_livekit_server():
                return

            def send(signum: int) -> None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signum)

            def exited(seconds: float | None) -> bool:
                return bool(select.select([pidfd], [], [], seconds)[0])

            stop_in_order(send, exited, timeout)
        finally:
            os.close(pidfd)
