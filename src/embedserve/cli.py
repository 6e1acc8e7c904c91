"""Command line: `embedserve serve [flags]` and `embedserve embed INPUT... --output DIR`. The
server accepts h2oGPT's startup flags, and an h2oGPT command line with no command name
(`embedserve --hf_embedding_model=...`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from embedserve import __version__
from embedserve.bulk.command import add_job_flags, run_embed
from embedserve.config.flags import JOB_SETTINGS, add_flags
from embedserve.config.settings import Settings
from embedserve.config.sources import settings_from
from embedserve.errors import EmbedServeError
from embedserve.logs import configure as configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedserve",
        description="OpenAI-compatible text embeddings server (h2oGPT's /v1/embeddings contract); "
        "accepts h2oGPT's startup flags.",
    )
    parser.add_argument("--version", action="version", version=f"embedserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the embeddings server",
        description="Run the embeddings server. Every setting can also come from an "
        "EMBEDSERVE_<SETTING> variable or a --config file (docs/configuration.md).",
    )
    add_flags(serve)
    embed = commands.add_parser(
        "embed",
        help="embed files of documents into a folder of Parquet parts",
        description="Embed a corpus of files with the server's engine into a folder of Parquet "
        "parts (or one .npy matrix), streaming, with progress, resumable after an interruption. "
        "The model flags are the server's (docs/bulk.md).",
    )
    add_job_flags(embed)
    add_flags(embed, only=JOB_SETTINGS)
    return parser


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from a command line (the command included), over EMBEDSERVE_* variables, over
    a config file, over the defaults."""
    return parse(argv, environ)[1]


def parse(
    argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> tuple[argparse.Namespace, Settings]:
    """The parsed command line and the settings it makes."""
    args = build_parser().parse_args(list(argv))
    return args, settings_from(args, os.environ if environ is None else environ)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # `embedserve --hf_embedding_model=...` works like h2oGPT
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        args, settings = parse(argv)
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "embed":
            return run_embed(args, settings)
        if getattr(args, "ray", False):
            from embedserve.ray_serve import Replicas, serve_on_ray

            given = vars(args)
            replicas = Replicas(
                given.get("replicas"), given.get("min_replicas"), given.get("max_replicas")
            )
            serve_on_ray(settings, given.get("ray_address", "local"), replicas)
            return 0
        from embedserve.server import serve

        serve(settings)
    except EmbedServeError as exc:
        command = "embedserve embed" if argv[0] == "embed" else "embedserve"
        print(f"{command}: error: {exc.message}", file=sys.stderr)
        return 2
    return 0
