"""``flash-wal pipe``: the changes of tables published to a NATS JetStream stream."""

import argparse
import signal
import sys
from typing import Callable, List

from ..client import Client, ClientConfig
from ..drivers.wal_logical import Driver, DriverConfig
from ..errors import FlashError
from ..foreground import run_until_stopped
from .listen import add_table_options, listen_conditions, table_selection
from .options import EXIT_INTERRUPTED, EXIT_OK, PROG, Parser, add_server_options, add_verbose_option

__all__ = ["cmd_pipe", "add_pipe_parser", "PIPE_SLOT"]

#: The replication slot ``pipe`` uses unless told otherwise (see LISTEN_SLOT for why
#: not the library's default).
PIPE_SLOT = "flash_pipe"
_FROM_ENVIRONMENT = "application_name=flash_wal"


def cmd_pipe(args: argparse.Namespace) -> int:
    """``flash-wal pipe``: publish the changes of tables to JetStream until SIGTERM."""
    try:
        from ..contrib.nats import JetStreamSink, StreamSettings  # needs the [nats] extra
    except ModuleNotFoundError as exc:
        raise FlashError(str(exc)) from None

    tables = table_selection(args)
    conditions = listen_conditions(args)
    settings = None
    if args.create_stream:
        settings = StreamSettings([f"{args.subject_prefix}.>"], replicas=args.replicas,
                                  duplicate_window=args.duplicate_window)
    sink = JetStreamSink(args.to, args.stream, subject_prefix=args.subject_prefix, max_pending=args.max_pending,
                         ack_timeout=args.ack_timeout, create_stream=settings)
    client = Client(ClientConfig(
        database_cnx=args.dsn or _FROM_ENVIRONMENT,
        driver=Driver(DriverConfig(
            publication_slot_prefix=args.prefix, replication_slot=args.slot, durable=args.durable,
        )),
    ))
    try:
        for text in tables.values():
            sink.attach(client, text, args.ops, fields=args.fields, conditions=conditions)
    except BaseException:
        sink.close()
        client.close()
        raise
    announced: List[str] = []

    def announce(line: str) -> None:
        if not announced:  # one line, once streaming; the rest only with --verbose (the log)
            announced.append(line)
            print(f"{line.replace('flash_wal: streaming', f'{PROG} pipe: publishing', 1)}"
                  f" -> JetStream stream {args.stream}", file=sys.stderr, flush=True)

    try:
        stopped = run_until_stopped(client, announce=announce)
    finally:
        sink.close()
    if stopped is None:
        raise FlashError("the replication stream ended unexpectedly")
    return EXIT_INTERRUPTED if stopped == signal.SIGINT else EXIT_OK


def _positive(kind: type) -> "Callable[[str], object]":
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _nats_url(text: str) -> str:
    if not text.startswith(("nats://", "tls://", "ws://", "wss://")):
        raise argparse.ArgumentTypeError(f"expected a NATS server URL such as nats://127.0.0.1:4222, got {text!r}")
    return text


def add_pipe_parser(commands: "argparse._SubParsersAction[Parser]") -> None:
    parser = commands.add_parser(
        "pipe",
        help="publish the changes of tables to a NATS JetStream stream",
        description=(
            "Publish every committed change of the tables to a NATS JetStream stream, one "
            "message per event, on the subject <subject-prefix>.<schema>.<table>.<operation> "
            "with the JSON object 'flash-wal listen' prints as its body and a Nats-Msg-Id "
            "header unique to the event, until SIGTERM or Ctrl-C. A transaction is "
            "acknowledged to PostgreSQL once JetStream stored each of its messages; with "
            "--durable a restarted pipe resumes there, and the stream's duplicate window "
            "drops what is sent again."
        ),
        epilog=(
            "exit status: 0 after SIGTERM, 1 on a failure (one line on stderr), 2 on a usage "
            f"error, 130 after Ctrl-C. Example: {PROG} pipe --table posts --to nats://127.0.0.1:4222 "
            "--stream CDC --durable"
        ),
    )
    add_table_options(parser, verb="publish")
    parser.add_argument(
        "--to", action="append", required=True, type=_nats_url, metavar="URL",
        help="a NATS server, such as nats://127.0.0.1:4222; repeat for each server of a cluster",
    )
    parser.add_argument("--stream", required=True, metavar="NAME", help="the JetStream stream to publish to")
    parser.add_argument(
        "--subject-prefix", default="flash_wal", metavar="PREFIX",
        help="the first tokens of every subject (default: flash_wal)",
    )
    add_server_options(parser, slot=PIPE_SLOT)
    parser.add_argument(
        "--durable", action="store_true",
        help=("keep the replication slot between runs and resume after the last transaction "
              "JetStream acknowledged; 'flash-wal cleanup' drops it"),
    )
    parser.add_argument(
        "--create-stream", action="store_true",
        help="create the stream (subjects <subject-prefix>.>) when it does not exist",
    )
    parser.add_argument("--replicas", type=_positive(int), default=1, metavar="N",
                        help="with --create-stream: the stream's replicas, 1 to 5 (default: 1)")
    parser.add_argument("--duplicate-window", type=_positive(float), default=120.0, metavar="SECONDS",
                        help="with --create-stream: the stream's duplicate window (default: 120)")
    parser.add_argument("--max-pending", type=_positive(int), default=1000, metavar="N",
                        help="messages published and not yet acknowledged by JetStream, at most (default: 1000)")
    parser.add_argument("--ack-timeout", type=_positive(float), default=5.0, metavar="SECONDS",
                        help="seconds to wait for JetStream's acknowledgement before sending again (default: 5)")
    add_verbose_option(parser, top_level=False)
    parser.set_defaults(command=cmd_pipe)


