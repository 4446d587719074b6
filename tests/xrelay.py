"""A TCP relay to a local X server's Unix socket: what an SSH X11 forward looks like.

``ssh -X`` gives the remote program ``DISPLAY=localhost:10.0``: a TCP connection that
carries X protocol bytes but no shared memory and no file descriptors. This relay
reproduces that for tests: it listens on ``127.0.0.1:6000+N`` and copies bytes both
ways to ``/tmp/.X11-unix/X<num>``, so ``DISPLAY=127.0.0.1:N`` reaches the Xvfb at
``:num`` the way a forwarded display would.
"""

from __future__ import annotations

import socket
import threading


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class XTcpRelay:
    """Listen on the first free TCP display ``127.0.0.1:N`` (N >= ``first``) and relay
    every connection to the X server ``:num``. ``display`` is the DISPLAY value to use."""

    def __init__(self, num: int, first: int = 40):
        self.target = f"/tmp/.X11-unix/X{num}"
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for n in range(first, first + 200):
            try:
                self.server.bind(("127.0.0.1", 6000 + n))
                break
            except OSError:
                continue
        else:
            raise OSError("no free TCP port for an X display relay")
        self.display = f"127.0.0.1:{n}"
        self.server.listen(16)
        self._stop = False
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self.server.accept()
            except OSError:
                break
            self.connections += 1
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._stop = True
        try:
            self.server.close()
        except OSError:
            pass
