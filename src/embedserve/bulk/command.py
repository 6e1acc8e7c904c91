"""The `embed` command's own flags, and running it from parsed flags."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from embedserve.bulk.inputs import INPUT_FORMATS
from embedserve.bulk.job import JobOptions, run_job
from embedserve.bulk.output import REJECTS
from embedserve.config import Settings

INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files, globs or folders of JSON Lines, CSV, Parquet or plain text (one document a "
        "line)",
    )
    parser.add_argument(
        "--output", "-o", required=True, type=Path, metavar="DIR", help="the output folder"
    )
    parser.add_argument(
        "--text-field", default="text", help="the field holding the text (default: text)"
    )
    parser.add_argument(
        "--id-field",
        help="the field holding each record's id (default: none, the id is <file name>:<line>)",
    )
    parser.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        default="auto",
        help="the inputs' format (default: auto, from each file's suffix)",
    )
    parser.add_argument(
        "--input-type",
        choices=("document", "query", "passage"),
        default="document",
        help="the instruction each text gets, as a request's input_type (default: document)",
    )
    parser.add_argument("--dimensions", type=int, help="keep the first N components")
    parser.add_argument("--keep-text", action="store_true", help="add a text column")
    parser.add_argument(
        "--format",
        choices=("parquet", "npy"),
        default="parquet",
        help="parquet (part files that read as one table) or npy (embeddings.npy and ids.jsonl)",
    )
    parser.add_argument(
        "--part-rows",
        type=int,
        default=2048,
        help="documents in one part file; an interrupted run resumes after the last complete "
        "part (default: 2048)",
    )
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        metavar="N",
        help="split each document into windows of N tokens, one row a chunk (default: truncate "
        "to the model's maximum)",
    )
    parser.add_argument(
        "--chunk-overlap",
        type=int,
        default=0,
        metavar="M",
        help="tokens each chunk shares with the one before (default: 0)",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help=f"write malformed records to DIR/{REJECTS} and go on (default: stop at the first)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="run on Ray Data: local (a cluster on this machine for the job), auto (the running "
        'cluster) or a cluster\'s address; needs pip install "embedserve[ray]" (default: no Ray)',
    )
    parser.add_argument(
        "--ray-actors",
        type=int,
        metavar="N",
        help="model copies on the cluster (default: one a stream's share of its CPUs)",
    )
    parser.add_argument(
        "--progress-every",
        dest="progress_every_s",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often a progress line is printed when stderr is not a terminal (default: 10)",
    )


def job_options(args: argparse.Namespace) -> JobOptions:
    """The job's options from its flags: each flag's dest is the option's name."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(JobOptions)}
    return JobOptions(**{**given, "inputs": tuple(args.inputs)})


def run_embed(args: argparse.Namespace, settings: Settings) -> int:
    options = job_options(args)
    try:
        if args.ray_address:
            from embedserve.bulk.ray_job import run_on_ray

            summary = run_on_ray(options, settings, args.ray_address, args.ray_actors)
        else:
            summary = run_job(options, settings)
    except KeyboardInterrupt:
        print(
            "embedserve embed: interrupted; run the same command again to resume after the "
            "last complete part",
            file=sys.stderr,
        )
        return INTERRUPTED
    print(summary, file=sys.stderr)
    return 0
