"""The engine on a thread of its own, for asyncio servers.

Coroutines ``stream()`` a request and await its tokens; the engine thread steps while any request
is in flight and sleeps otherwise. Torch releases the GIL inside its kernels, so the event loop
keeps accepting requests and writing responses while a step runs. Requests and cancellations
reach the thread through a queue, so the loop never waits for a step to end.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence

from model.serve.engine import Engine, SamplingParams, TokenEvent

Sink = Callable[[TokenEvent], None]


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._ids = itertools.count()
        self._sinks: dict[int, Sink] = {}  # touched by the engine thread only
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="serve-engine", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, prompt: Sequence[int], params: SamplingParams, sink: Sink) -> int:
        """Queue a request; ``sink`` gets its events on the engine thread. Raises ValueError at once
        for a request the model cannot serve."""
        self.engine.check_request(prompt, params)
        request_id = next(self._ids)
        self._inbox.put(("add", request_id, list(prompt), params, sink))
        self._wake.set()
        return request_id

    def cancel(self, request_id: int) -> None:
        self._inbox.put(("cancel", request_id))
        self._wake.set()

    async def stream(self, prompt: Sequence[int], params: SamplingParams) -> AsyncIterator[TokenEvent]:
        """The request's events, the last one with its ``finish_reason``. Leaving early (the client
        went away, a stop string matched) cancels the request in the engine."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TokenEvent] = asyncio.Queue()
        request_id = self.submit(prompt, params, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        finished = False
        try:
            while not finished:
                event = await events.get()
                finished = event.finish_reason is not None
                yield event
        finally:
            if not finished:
                self.cancel(request_id)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping:
            self._take_inbox()
            if not self.engine.has_work():
                self._wake.wait()
                self._wake.clear()
                continue
            for event in self.engine.step():
                sink = self._sinks.get(event.request_id)
                if event.finish_reason is not None:
                    self._sinks.pop(event.request_id, None)
                if sink is not None:
                    sink(event)

    def _take_inbox(self) -> None:
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return
            if message[0] == "cancel":
                self.engine.cancel(message[1])
                continue
            _, request_id, prompt, params, sink = message
            try:
                self.engine.add(request_id, prompt, params)
            except ValueError as error:  # checked in submit already; a race would land here
                sink(TokenEvent(request_id, None, finish_reason="error", error=str(error)))
                continue
            self._sinks[request_id] = sink
