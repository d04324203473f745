"""A job's log as a stream of new text: the Jobs API websocket (``tail_job_logs``) read in a
background thread, falling back to polling ``get_job_logs`` when streaming fails."""

from __future__ import annotations

import asyncio
import queue
import threading

_FAILED = object()
_DONE = object()


class LogStream:
    """``read()`` returns the log text that arrived since the previous call."""

    def __init__(self, client, job_id: str, stream: bool = True):
        self.client, self.job_id = client, job_id
        self.received = 0  # characters handed out so far (the polling fallback resumes here)
        self.mode = "tail" if stream else "poll"
        self.done = False
        self._queue: queue.Queue = queue.Queue()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True, name="raysam-logs")
        if stream:
            self._thread.start()

    def _pump(self) -> None:
        async def go() -> None:
            async for chunk in self.client.tail_job_logs(self.job_id):
                self._queue.put(chunk)
                if self._halt.is_set():
                    return

        try:
            asyncio.run(go())
            self._queue.put(_DONE)
        except Exception:  # noqa: BLE001 - any streaming problem: poll instead
            self._queue.put(_FAILED)

    def _drain(self) -> list[str]:
        out = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if item is _DONE:
                self.done = True
            elif item is _FAILED:
                self.mode = "poll"
            else:
                out.append(item)

    def read(self, final: bool = False) -> str:
        """New text; with ``final`` (the job has ended) everything up to the end of the log."""
        parts = self._drain() if self.mode == "tail" else []
        if final and self.mode == "tail" and not self.done:
            self._thread.join(timeout=2.0)
            parts += self._drain()
            if not self.done:
                self.mode = "poll"
        text = "".join(parts)
        self.received += len(text)
        if self.mode == "poll":
            logs = self.client.get_job_logs(self.job_id)
            text += logs[self.received:]
            self.received = max(self.received, len(logs))
        return text

    def close(self) -> None:
        self._halt.set()
