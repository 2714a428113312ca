"""A tiny client for a Gradio app's queue over plain HTTP (upload, join, read the event stream).

gradio_client cannot drive a streaming-input event (the live webcam: its "process_streaming" message is
unknown to it), so load tests and concurrency tests send live frames the way a browser does, with httpx.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx


class GradioHTTP:
    """One browser-like session against an app at `url` (its own session hash)."""

    def __init__(self, url: str, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/") + "/"
        self.session = secrets.token_hex(6)
        self.http = httpx.Client(timeout=timeout)
        config = self.http.get(self.url + "config").json()
        self.fn_index = {d.get("api_name"): i for i, d in enumerate(config["dependencies"])
                         if d.get("api_name")}
        self.trigger = {d.get("api_name"): (d.get("targets") or [[None]])[0][0] for d in config["dependencies"]
                        if d.get("api_name")}
        # Events without an API name (a button's click, as the page wires it) by "elem_id.event".
        elem = {c["id"]: (c.get("props") or {}).get("elem_id") for c in config["components"]}
        for index, dep in enumerate(config["dependencies"]):
            for target, event in dep.get("targets") or []:
                if elem.get(target):
                    name = f"{elem[target]}.{event}"
                    self.fn_index.setdefault(name, index)
                    self.trigger.setdefault(name, target)

    def upload(self, path: str | Path) -> dict[str, Any]:
        """Upload a file; the FileData dict an event takes as input."""
        with open(path, "rb") as handle:
            response = self.http.post(self.url + "gradio_api/upload", files={"files": (Path(path).name, handle)})
        response.raise_for_status()
        server_path = response.json()[0]
        return {"path": server_path, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}

    def _event(self, api_name: str, data: list[Any]) -> dict[str, Any]:
        return {"data": data, "fn_index": self.fn_index[api_name], "trigger_id": self.trigger[api_name],
                "session_hash": self.session, "event_data": None}

    def _join(self, api_name: str, data: list[Any]) -> str:
        joined = self.http.post(self.url + "gradio_api/queue/join", json=self._event(api_name, data))
        joined.raise_for_status()
        return joined.json()["event_id"]

    @staticmethod
    def _next(lines, event_id: str, api_name: str, wanted: tuple[str, ...]) -> list[Any]:
        """The outputs of the next `wanted` message of this event; RuntimeError when the server failed it."""
        for line in lines:
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("event_id") != event_id:
                continue
            kind = message.get("msg")
            output = message.get("output") or {}
            if kind in ("process_completed", "process_streaming") and (
                    not message.get("success", True) or output.get("error")):
                raise RuntimeError(f"{api_name}: {output.get('error') or 'failed'}")
            if kind == "process_completed" and "process_completed" not in wanted:
                raise RuntimeError(f"{api_name}: the stream ended early (time limit?)")
            if kind in wanted:
                return output.get("data", [])
        raise RuntimeError(f"{api_name}: the event stream ended without a result")

    def call(self, api_name: str, data: list[Any]) -> list[Any]:
        """Run one event (an API name, or "elem_id.event" as a page's button fires it) and return its outputs;
        RuntimeError with the server's message when it failed."""
        event_id = self._join(api_name, data)
        with self.http.stream("GET", self.url + "gradio_api/queue/data",
                              params={"session_hash": self.session}) as stream:
            return self._next(stream.iter_lines(), event_id, api_name, ("process_completed",))

    def stream(self, api_name: str, frames: list[list[Any]]) -> list[list[Any]]:
        """A streaming event as a webcam drives it: the first frame joins the queue (waiting for a free slot),
        each later frame is posted to the open event once the previous answer came; then the stream closes.
        Returns the outputs for every frame."""
        event_id = self._join(api_name, frames[0])
        answers = []
        with self.http.stream("GET", self.url + "gradio_api/queue/data",
                              params={"session_hash": self.session}) as stream:
            lines = stream.iter_lines()
            try:
                for index, frame in enumerate(frames):
                    if index:
                        self.http.post(self.url + f"gradio_api/stream/{event_id}",
                                       json=self._event(api_name, frame)).raise_for_status()
                    answers.append(self._next(lines, event_id, api_name, ("process_streaming",)))
            finally:
                self.http.post(self.url + f"gradio_api/stream/{event_id}/close")
        return answers

    def close(self) -> None:
        self.http.close()
