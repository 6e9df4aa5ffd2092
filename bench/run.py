"""`make bench`: run every benchmark section and write bench/results/*.json + *.png."""

from __future__ import annotations

import json
import sys

from bench import (
    adapters,
    canary,
    drift,
    gateway,
    history,
    peer,
    quantized,
    rated_answers,
    replicas,
    scorer_versions,
    scoring,
    serving,
    sessions_index,
    structured,
    tracing,
)

SECTIONS = {
    "serving": serving.run,
    "peer": peer.run,
    "quantized": quantized.run,
    "gateway": gateway.run,
    "replicas": replicas.run,
    "adapters": adapters.run,
    "scoring": scoring.run,
    "scorer_versions": scorer_versions.run,
    "history": history.run,
    "sessions_index": sessions_index.run,
    "structured": structured.run,
    "drift": drift.run,
    "rated_answers": rated_answers.run,
    "canary": canary.run,
    "tracing": tracing.run,
}


def main(argv: list[str]) -> int:
    chosen = argv or list(SECTIONS)
    for name in chosen:
        print(f"== {name}")
        result = SECTIONS[name]()
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
