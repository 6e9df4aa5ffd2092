"""`tonewatch` command line: serve, provision (and training/eval commands as they land)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (argparse's formatter), unless the help already says what happens
    without the option ("default: ..."), which is what an option whose default is None has to say itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.required:
            return text
        return super()._get_help_string(action)


def _settings(**overrides):
    from app.config import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings = _settings(host=args.host, port=args.port)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per upstream request is noise
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, timeout_graceful_shutdown=10)
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    """Convert the configured base model once so that `serve` starts in a second (used by make and Docker)."""
    from app.engine.provision import embedding_model_dir, materialize, resolve_base_model

    settings = _settings()
    source = resolve_base_model(settings.base_model, settings.served_model_name)
    folder = materialize(source, settings.model_cache_dir)
    print(f"base model {source.name}: {folder}")
    print(f"embedding model: {embedding_model_dir()}")
    return 0


def cmd_train_style(args: argparse.Namespace) -> int:
    import json

    from app.scoring.train import train

    metrics = train(seed=args.seed)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_train_adapter(args: argparse.Namespace) -> int:
    from app.training.train_adapter import main as train_main

    return train_main(args.rest) or 0


def cmd_eval(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    suite = None
    for i, arg in enumerate(rest):  # --suite stress | --suite=stress picks the stress suite; default: the report
        if arg == "--suite" and i + 1 < len(rest):
            suite, rest = rest[i + 1], rest[:i] + rest[i + 2 :]
            break
        if arg.startswith("--suite="):
            suite, rest = arg.split("=", 1)[1], rest[:i] + rest[i + 1 :]
            break
    if suite == "stress":
        from app.evaluation.stress import main as stress_main

        return stress_main(rest) or 0
    if suite not in (None, "report"):
        print(f"error: unknown suite {suite!r} (report | stress)", file=sys.stderr)
        return 2
    from app.evaluation.report import main as eval_main

    return eval_main(rest) or 0


def cmd_export(args: argparse.Namespace) -> int:
    """Session turns from a running server to JSON Lines or Parquet (app/export.py)."""
    from pathlib import Path

    import httpx

    from app.export import FILTERS, ExportFailed, turns, write

    key = os.environ.get("TONEWATCH_API_KEY")
    if not key:
        print("error: set TONEWATCH_API_KEY to a client key or the admin token", file=sys.stderr)
        return 2
    out = Path(args.output or f"sessions.{args.format}")
    partial = out.with_name(out.name + ".partial")  # a failed export leaves no half file under the real name
    params = {name: getattr(args, name) for name in FILTERS}
    try:
        with httpx.Client(base_url=args.url, timeout=httpx.Timeout(30.0, read=300.0)) as client:
            count = write(turns(client, params, {"Authorization": f"Bearer {key}"}), partial, args.format)
    except (ExportFailed, httpx.HTTPError) as exc:
        partial.unlink(missing_ok=True)
        print(f"error: export failed: {exc}", file=sys.stderr)
        return 1
    partial.replace(out)
    print(f"{count} turns -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    parser = argparse.ArgumentParser(prog="tonewatch", description="Tone-consistency evaluation service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server", formatter_class=DefaultsHelpFormatter)
    serve.add_argument("--host", help="interface to bind (default: TONEWATCH_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: TONEWATCH_PORT, else 8000)")
    serve.set_defaults(func=cmd_serve)
    export = sub.add_parser(
        "export",
        help="session turns from a server to JSON Lines or Parquet (key: $TONEWATCH_API_KEY)",
        formatter_class=DefaultsHelpFormatter,
    )
    export.add_argument("--url", default="http://127.0.0.1:8000", help="the Tonewatch server")
    export.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl", help="output format")
    export.add_argument("-o", "--output", help="output file (default: sessions.<format>)")
    export.add_argument(
        "--alerting",
        type=lambda v: {"true": True, "false": False}[v.lower()],
        help="true | false: only sessions (not) in drift alarm (default: both)",
    )
    for name in ("adapter", "persona", "label"):
        export.add_argument(f"--{name}", help=f"only sessions whose last turn had this {name} (default: any)")
    export.add_argument("--since", type=float, help="last activity at or after, unix seconds (default: any)")
    export.add_argument("--until", type=float, help="last activity at or before, unix seconds (default: any)")
    export.add_argument("--order", choices=["recent", "drift"], default="recent", help="session order")
    export.set_defaults(func=cmd_export)
    prov = sub.add_parser("provision", help="prepare model caches (no network)")
    prov.set_defaults(func=cmd_provision)
    style = sub.add_parser(
        "train-style",
        help="train the tone head on data/style (writes models/style)",
        formatter_class=DefaultsHelpFormatter,
    )
    style.add_argument("--seed", type=int, default=13, help="random seed of the split and the training")
    style.set_defaults(func=cmd_train_style)
    # these two own their flags: hand everything after the command name to them
    sub.add_parser("train-adapter", help="train a persona adapter (tonewatch train-adapter --help)", add_help=False)
    sub.add_parser("eval", help="compare adapters: tone, drift, latency (tonewatch eval --help)", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        return DELEGATED[argv[0]](argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    return args.func(args)


DELEGATED = {"train-adapter": cmd_train_adapter, "eval": cmd_eval}

if __name__ == "__main__":
    sys.exit(main())
