"""Chat completion flow, whatever the backend: parse + route -> generate (embedded engine or upstream) -> tone ->
record -> response. No FastAPI here: routers translate HTTP; this module holds the flow and raises typed errors.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from app.backends import openai_format as fmt
from app.backends.base import ChatBackend, ChatCall, ChatStream, Chunk, Completed, StreamEnd
from app.errors import GenerationFailed, ModelNotFound, UpstreamUnavailable
from app.services.canary import CanaryService
from app.services.tone import ToneService
from app.services.turns import GeneratedTurn, TurnRecorder
from app.telemetry import NO_TELEMETRY, Generation, Telemetry

# Failures after generation started that are recorded as a failed turn (the rest are refusals before it starts).
MID_FLIGHT = (GenerationFailed, UpstreamUnavailable)


class ChatService:
    def __init__(
        self,
        backend: ChatBackend,
        recorder: TurnRecorder,
        tone: ToneService,
        canary: CanaryService,
        *,
        telemetry: Telemetry = NO_TELEMETRY,
    ):
        self.backend = backend
        self.recorder = recorder
        self.tone = tone
        self.canary = canary
        self.telemetry = telemetry  # the generation's span: around the call, its scoring and its recording

    async def prepare(self, raw: dict[str, Any], kind: str = "chat", owner: str | None = None) -> ChatCall:
        """parse, claim the session for the caller's key, then the canary's routing: a request of an experiment
        session that names no model goes to its arm's adapter (requests that name a model are never rerouted)."""
        call = self.parse(raw, kind)
        await self.claim(call, owner)
        await self.route_experiment(call, raw.get("model"))
        return call

    async def claim(self, call: ChatCall, owner: str | None) -> None:
        """Record the caller's key id on the call; refuse a session another key created (before any generation)."""
        call.owner = owner
        await self.recorder.claim(call.session_id, owner)

    async def route_experiment(self, call: ChatCall, model: str | None) -> None:
        if model not in (None, "", "default") or not self.canary.running:
            return
        assignment = await self.canary.assign(call.session_id)
        if assignment is None:
            return
        try:
            call.served = self.backend.route(assignment.adapter)
        except ModelNotFound:
            return  # the canary adapter went away: the default serves, outside the experiment
        call.experiment = assignment
        if call.persona is None and self.canary.config is not None:
            call.persona = self.canary.config.persona  # both arms are judged against the experiment's persona

    def parse(self, raw: dict[str, Any], kind: str = "chat") -> ChatCall:
        """Validate and route a chat (`kind` "chat") or text completion ("completion") request."""
        if kind == "completion":
            call = self.backend.parse_completion(raw, "cmpl-" + uuid.uuid4().hex)
        else:
            call = self.backend.parse_chat(raw, "chatcmpl-" + uuid.uuid4().hex)
        self.tone.persona(call.persona)  # an unknown persona is a 404 before any generation
        return call

    def _turn(
        self,
        call: ChatCall,
        text: str,
        finish_reason: str,
        *,
        latency: dict | None = None,
        delivered: bool = True,
        score: bool = True,
        tone_basis: str = "text",
    ) -> GeneratedTurn:
        return GeneratedTurn(
            session_id=call.session_id,
            persona=call.persona,
            source=call.served.model,
            label=call.served.label,
            adapter=call.served.adapter,
            prompt=call.prompt_text,
            text=text,
            finish_reason=finish_reason,
            request_id=call.request_id,
            latency=latency or {},
            delivered=delivered,
            score=score,
            kind=call.kind,
            tone_basis=tone_basis,
            experiment=call.experiment,
            owner=call.owner,
        )

    # ---- non-stream -----------------------------------------------------------------------------------------
    async def complete(self, call: ChatCall, client_connected: Callable[[], Awaitable[bool]]) -> dict[str, Any]:
        with self.telemetry.generation(call) as generation:
            return await self._complete(call, client_connected, generation)

    async def _complete(
        self, call: ChatCall, client_connected: Callable[[], Awaitable[bool]], generation: Generation
    ) -> dict[str, Any]:
        partial: list[str] = []
        try:
            done: Completed = await self.backend.chat(call, partial)
        except asyncio.CancelledError:  # the client left: generation stopped; record what it had produced
            if call.session_id:
                self.recorder.finish_in_background(
                    self._turn(call, "".join(partial), "cancelled", delivered=False, score=False)
                )
            raise
        except MID_FLIGHT:
            if call.session_id:
                self.recorder.finish_in_background(
                    self._turn(call, "".join(partial), "error", delivered=False, score=False)
                )
            raise
        generation.completed(done)
        delivered = await client_connected()
        extra = await self.recorder.finish(
            self._turn(
                call,
                done.text,
                done.finish_reason,
                latency=done.latency,
                delivered=delivered,
                score=done.scoreable,
                tone_basis=done.tone_basis,
            )
        )
        return {**done.body, **extra}

    # ---- stream ---------------------------------------------------------------------------------------------
    async def stream(self, call: ChatCall) -> AsyncIterator[dict[str, Any] | bytes]:
        """Opens the stream now (so refusals are still HTTP errors) and returns the chunk iterator."""
        generation = self.telemetry.generation(call)
        try:
            with generation.activate():  # the upstream's request carries this span as its parent
                stream = await self.backend.chat_stream(call)
        except BaseException as exc:
            generation.finish(exc)
            raise
        return self._relay(call, stream, generation)

    async def _relay(
        self, call: ChatCall, stream: ChatStream, generation: Generation
    ) -> AsyncIterator[dict[str, Any] | bytes]:
        ended = False
        failure: BaseException | None = None
        try:
            async for event in stream:
                if isinstance(event, Chunk):
                    generation.chunk(event.payload)
                    yield event.payload
                    continue
                ended = True
                generation.stream_ended(event)
                async for chunk in self._finish_stream(call, event, generation):
                    yield chunk
        except MID_FLIGHT as exc:
            ended, failure = True, exc
            if call.session_id:
                self.recorder.finish_in_background(
                    self._turn(call, stream.partial_text(), "error", delivered=False, score=False)
                )
            raise
        except BaseException as exc:  # the client left (GeneratorExit, cancellation) or a bug: the span says so
            failure = exc
            raise
        finally:
            if not ended:
                await stream.aclose()
                self._record_abandoned(call, stream)
            generation.finish(failure)

    async def _finish_stream(
        self, call: ChatCall, end: StreamEnd, generation: Generation
    ) -> AsyncIterator[dict[str, Any]]:
        with generation.activate():  # no yield inside: the recording task inherits the span, then it is let go
            extra = await self.recorder.finish(
                self._turn(
                    call,
                    end.text,
                    end.finish_reason,
                    latency=end.latency,
                    score=end.scoreable,
                    tone_basis=end.tone_basis,
                )
            )
        if end.trailer:
            yield {**end.trailer[0], **extra}
            for chunk in end.trailer[1:]:
                yield chunk
        elif extra:
            yield fmt.extension_chunk(call.request_id, call.served.model, call.kind, extra)

    def _record_abandoned(self, call: ChatCall, stream: ChatStream) -> None:
        if not call.session_id:
            return
        end = stream.leftover()
        if end is not None:  # it finished just as the client left: complete, but the client never got the end
            turn = self._turn(
                call,
                end.text,
                end.finish_reason,
                latency=end.latency,
                delivered=False,
                score=end.scoreable,
                tone_basis=end.tone_basis,
            )
        else:
            turn = self._turn(call, stream.partial_text(), "cancelled", delivered=False, score=False)
        self.recorder.finish_in_background(turn)

    async def list_models(self) -> list[dict[str, Any]]:
        return await self.backend.list_models()

    async def get_model(self, model_id: str) -> dict[str, Any]:
        for card in await self.backend.list_models():
            if card["id"] == model_id:
                return card
        raise ModelNotFound(f"model {model_id!r} does not exist; GET /v1/models lists what is served", param="model")
