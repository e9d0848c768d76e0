"""The kernel manager and client the runner gives papermill (imported only when executing).

* :class:`WatchedKernelManager` remembers the kernel's exit status when nbclient finds the kernel
  dead, so "the kernel died" can say by which signal, and sends the kernel process's own stdout and
  stderr to a log file (issue #27: a kernel killed on a cell timeout printed ipykernel's ZMQ
  traceback onto the runner's console; cell outputs still come through papermill as before).
* :class:`SlicedKernelClient` waits for shell and IOPub messages in slices of at most
  :data:`SLICE_S` seconds instead of one unbounded wait. Issue #9: nbclient waits for a cell's
  ``execute_reply`` with ``shell_channel.get_msg(timeout=None)``, i.e. an asyncio ``poll`` on the
  zmq socket that only an event-loop wake-up ends. In one of 60 measured headless runs of a
  widget cell (an ipywidgets ``Output`` shown with ``display(fig)``, as the history explorer did)
  the cell "took" exactly the 20 s cell timeout and then completed normally with its output: the
  reply was evidently already in the socket with nothing waking the poll, and pyzmq's poll, when
  its timeout fires, checks the socket once more with a plain ``poll(0)`` and finds it. Without a timeout that wait is endless (the
  hang of #9). A bounded poll repeated in slices ends such a stall within a slice.
"""

from __future__ import annotations

import time
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Type

#: Longest single wait on a kernel socket (seconds).
SLICE_S = 1.0


class SlicedChannel(AsyncZMQSocketChannel):
    """``get_msg`` as a series of bounded polls; same contract (returns a message or raises Empty)."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        assert self.socket is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = SLICE_S if deadline is None else max(0.0, min(SLICE_S, deadline - time.monotonic()))
            if await self.socket.poll(int(step * 1000)):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty


class SlicedKernelClient(AsyncKernelClient):
    shell_channel_class = Type(SlicedChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(SlicedChannel)  # type: ignore[assignment]


def watched_kernel_manager(log_path: Path | str | None = None) -> type[AsyncKernelManager]:
    """A fresh AsyncKernelManager class (one per notebook) whose ``exit_status`` is the kernel's exit
    status once it was found dead (negative: killed by that signal), and whose clients are
    :class:`SlicedKernelClient`. With ``log_path``, the kernel process's stdout and stderr (ipykernel's
    own messages, not the cells' outputs, which travel over IOPub) are appended to that file instead
    of this process's console."""

    class WatchedKernelManager(AsyncKernelManager):
        exit_status: int | None = None
        kernel_log: Path | None = Path(log_path) if log_path is not None else None
        client_class = DottedObjectName("cifar_utils.book.kernel.SlicedKernelClient")
        client_factory = Type(SlicedKernelClient)

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            # jupyter_client's hook for launching differently: its launcher passes stdout/stderr to Popen
            if self.kernel_log is None:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            self.kernel_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.kernel_log, "ab") as log:  # the child keeps its own copy of the descriptor
                kw["stdout"] = kw["stderr"] = log
                return await super()._async_launch_kernel(kernel_cmd, **kw)

        async def is_alive(self) -> bool:  # type: ignore[override]
            alive = await super().is_alive()
            if not alive and self.provisioner is not None:
                type(self).exit_status = await self.provisioner.poll()
            return alive

    return WatchedKernelManager
