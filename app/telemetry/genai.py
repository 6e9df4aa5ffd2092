"""GenAI semantic-convention shapes (open-telemetry/semantic-conventions-genai, docs/gen-ai/): span names and
attributes of an inference call, the `gen_ai.evaluation.result` attributes of a tone report, message content in
the conventions' JSON form. Pure functions of plain data: no OpenTelemetry import, unit-tested directly."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.backends.base import ChatCall

EVALUATION_EVENT = "gen_ai.evaluation.result"
DIMENSIONS = ("formality", "politeness", "warmth")
AttributeValue = str | bool | int | float | list[str]
Attributes = dict[str, AttributeValue]


def operation(call: ChatCall) -> str:
    """`text_completion` for /v1/completions; `chat` for chat completions and /v1/responses (a chat underneath)."""
    return "text_completion" if call.kind == "completion" else "chat"


def request_model(call: ChatCall) -> str:
    model = call.raw.get("model")
    return model if isinstance(model, str) and model not in ("", "default") else call.served.model


def span_name(call: ChatCall) -> str:
    model = request_model(call)
    return f"{operation(call)} {model}" if model else operation(call)


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def request_attributes(call: ChatCall, provider: str) -> Attributes:
    raw = call.raw
    attrs: Attributes = {
        "gen_ai.operation.name": operation(call),
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request_model(call),
        "tonewatch.request.kind": call.kind,
    }
    if call.session_id:
        attrs["gen_ai.conversation.id"] = call.session_id
    if call.persona:
        attrs["tonewatch.persona"] = call.persona
    if call.stream:
        attrs["gen_ai.request.stream"] = True
    max_tokens = _number(raw.get("max_completion_tokens", raw.get("max_tokens")))
    for key, value in (
        ("gen_ai.request.max_tokens", max_tokens),
        ("gen_ai.request.temperature", _number(raw.get("temperature"))),
        ("gen_ai.request.top_p", _number(raw.get("top_p"))),
        ("gen_ai.request.seed", _number(raw.get("seed"))),
        ("gen_ai.request.frequency_penalty", _number(raw.get("frequency_penalty"))),
        ("gen_ai.request.presence_penalty", _number(raw.get("presence_penalty"))),
    ):
        if value is not None:
            attrs[key] = value
    stop = raw.get("stop")
    if isinstance(stop, str):
        attrs["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attrs["gen_ai.request.stop_sequences"] = list(stop)
    if call.experiment is not None:
        attrs["tonewatch.canary.arm"] = str(getattr(call.experiment, "arm", ""))
    return attrs


def usage_attributes(usage: Any) -> Attributes:
    attrs: Attributes = {}
    if not isinstance(usage, dict):
        return attrs
    prompt, completion = _number(usage.get("prompt_tokens")), _number(usage.get("completion_tokens"))
    if prompt is not None:
        attrs["gen_ai.usage.input_tokens"] = int(prompt)
    if completion is not None:
        attrs["gen_ai.usage.output_tokens"] = int(completion)
    return attrs


def body_attributes(body: dict[str, Any]) -> Attributes:
    """What an OpenAI-shaped response body says: id, model, finish reasons, usage, system fingerprint."""
    attrs: Attributes = {}
    if isinstance(body.get("id"), str):
        attrs["gen_ai.response.id"] = body["id"]
    if isinstance(body.get("model"), str):
        attrs["gen_ai.response.model"] = body["model"]
    reasons = [c["finish_reason"] for c in body.get("choices") or [] if isinstance(c, dict) and c.get("finish_reason")]
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = [str(r) for r in reasons]
    if isinstance(body.get("system_fingerprint"), str):
        attrs["gen_ai.openai.response.system_fingerprint"] = body["system_fingerprint"]
    attrs.update(usage_attributes(body.get("usage")))
    return attrs


def latency_attributes(latency: dict[str, float]) -> Attributes:
    """The engine's timings of this generation: queue wait, time to first token (the conventions'
    `gen_ai.response.time_to_first_chunk`), total."""
    attrs: Attributes = {}
    if "queue_s" in latency:
        attrs["tonewatch.queue_wait_s"] = float(latency["queue_s"])
    if "ttft_s" in latency:
        attrs["gen_ai.response.time_to_first_chunk"] = float(latency["ttft_s"])
    if "total_s" in latency:
        attrs["tonewatch.generation_s"] = float(latency["total_s"])
    if latency.get("tokens"):
        attrs["gen_ai.usage.output_tokens"] = int(latency["tokens"])
    return attrs


# ---- content (only with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true) ----------------------------
def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def input_messages(call: ChatCall, clean: Callable[[str], str]) -> str:
    """`gen_ai.input.messages`: the request's messages as role + text parts (JSON), each text through `clean`."""
    raw = call.raw
    if call.kind == "completion":
        prompt = raw.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else [p for p in prompt or [] if isinstance(p, str)]
        messages = [{"role": "user", "parts": [{"type": "text", "content": clean(p)}]} for p in prompts]
    else:
        messages = [
            {"role": str(m.get("role", "user")), "parts": [{"type": "text", "content": clean(_text(m.get("content")))}]}
            for m in raw.get("messages") or []
            if isinstance(m, dict)
        ]
    return json.dumps(messages, ensure_ascii=False)


def output_messages(text: str, finish_reason: str, clean: Callable[[str], str]) -> str:
    message = {"role": "assistant", "parts": [{"type": "text", "content": clean(text)}], "finish_reason": finish_reason}
    return json.dumps([message], ensure_ascii=False)


# ---- evaluations ------------------------------------------------------------------------------------------
def evaluation_attributes(
    tone: dict[str, Any], *, response_id: str | None = None, index: int | None = None
) -> list[Attributes]:
    """One `gen_ai.evaluation.result` per tone dimension (formality, politeness, warmth: 0..1), one for the persona
    distance (label `match` / `mismatch` against the persona's calibrated radius) when a persona judged it, and one
    for the tone label (`gen_ai.evaluation.score.label`, its probability as the value)."""
    common: Attributes = {}
    if response_id:
        common["gen_ai.response.id"] = response_id
    if index is not None:
        common["tonewatch.text.index"] = index
    if tone.get("basis"):
        common["tonewatch.tone.basis"] = str(tone["basis"])
    events: list[Attributes] = []
    for dimension in DIMENSIONS:
        value = _number(tone.get(dimension))
        if value is not None:
            events.append(
                {"gen_ai.evaluation.name": dimension, "gen_ai.evaluation.score.value": float(value), **common}
            )
    distance = _number(tone.get("persona_distance"))
    if distance is not None:
        persona = str(tone.get("persona", ""))
        event: Attributes = {
            "gen_ai.evaluation.name": "persona_distance",
            "gen_ai.evaluation.score.value": float(distance),
            "gen_ai.evaluation.explanation": f"style-space distance to persona {persona!r}'s centroid",
            "tonewatch.persona": persona,
            **common,
        }
        if "persona_match" in tone:
            event["gen_ai.evaluation.score.label"] = "match" if tone["persona_match"] else "mismatch"
        events.append(event)
    label = tone.get("label")
    if isinstance(label, str):
        event = {"gen_ai.evaluation.name": "tone", "gen_ai.evaluation.score.label": label, **common}
        probs = tone.get("probs")
        probability = _number(probs.get(label)) if isinstance(probs, dict) else None
        if probability is not None:
            event["gen_ai.evaluation.score.value"] = float(probability)
            event["gen_ai.evaluation.explanation"] = f"tone label {label!r} with probability {probability:.3f}"
        events.append(event)
    return events


def drift_attributes(session_id: str, source: str, persona: str | None, report: Any) -> Attributes:
    """The alarm's onset as an evaluation of the session: name `tone_drift`, label `alarm`, the EWMA score."""
    detector = getattr(report, "detector", None) or "drift"
    cusum, threshold = getattr(report, "cusum", 0.0), getattr(report, "threshold", 0.0)
    attrs: Attributes = {
        "gen_ai.evaluation.name": "tone_drift",
        "gen_ai.evaluation.score.label": "alarm",
        "gen_ai.evaluation.score.value": float(getattr(report, "score", 0.0)),
        "gen_ai.evaluation.explanation": (
            f"{detector} alarm after {getattr(report, 'turns', 0)} turns (cusum {cusum:.2f}, threshold {threshold:.2f})"
        ),
        "gen_ai.conversation.id": session_id,
        "tonewatch.drift.detector": str(detector),
        "tonewatch.source": source,
    }
    if persona and persona != "none":
        attrs["tonewatch.persona"] = persona
    return attrs
