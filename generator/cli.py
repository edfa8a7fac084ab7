"""The command line: parse arguments, call one library function, print, map errors to exit codes.

Exit codes: 0 success, 1 a problem the message explains (bad spec, failed export, invalid
repository, server failure), 2 bad command-line usage, 130 interrupted. Only this module prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from generator import __version__
from generator.core.errors import GeneratorError, LoadTestError, os_error_line
from generator.core.options import add_options

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (CI logs, a file) gets room for the report tables instead of rich's default 80 columns.
    width = None if stream.isatty() else 160
    # markup=False: names, paths and messages come from users and print literally ("[prod]" stays).
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width, markup=False)


def _labelled(console: Any, label: str, style: str, message: str) -> None:
    """Print ``label: message`` with only the label coloured; the message is printed as is."""
    from rich.text import Text

    console.print(Text.assemble((label, style), ": ", message))


def _port(text: str) -> int:
    """An argparse type: a TCP port a server can bind (1-65535)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range; use 1-65535")
    return port


def _add_ports(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001)")
    parser.add_argument(
        "--metrics-port", type=_port, default=8002, help="Prometheus metrics port (default 8002)"
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the server)",
    )


def _add_build(build: argparse.ArgumentParser) -> None:
    build.add_argument(
        "spec", nargs="?", help="YAML spec (default: generator.yaml, else the bundled example)"
    )
    build.add_argument("--output", "-o", help="repository directory (default: the spec's `repository`)")
    build.add_argument(
        "--device",
        choices=["cpu", "gpu", "auto"],
        default="cpu",
        help="instance kind: cpu -> KIND_CPU, gpu -> KIND_GPU, auto -> KIND_AUTO (default cpu)",
    )
    build.add_argument(
        "--gpus",
        help="GPU ids for --device gpu: 0,1, or all (detected with NVML); default: every GPU Triton sees",
    )
    build.add_argument("--templates", help="directory with your own copies of the Jinja templates")
    build.add_argument(
        "--no-tuned",
        action="store_true",
        help="build from the spec alone, without the tuned settings beside it (SPEC_STEM.tuned.yaml)",
    )


def _triton_version(text: str) -> Any:
    """An argparse type: a Triton version (2.51) or the release of its container (24.10)."""
    from generator.validate.schema import TritonVersion

    try:
        return TritonVersion.parse(text)
    except GeneratorError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _gpu_ids(text: str) -> frozenset[int]:
    """An argparse type: GPU ids (0,1) or none."""
    from generator.validate.schema import parse_gpu_ids

    try:
        return parse_gpu_ids(text)
    except GeneratorError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_validate(validate: argparse.ArgumentParser) -> None:
    validate.add_argument(
        "repository", nargs="?", default="model_repository", help="default: model_repository"
    )
    validate.add_argument(
        "--triton-version",
        type=_triton_version,
        help="judge for this Triton (2.51, or its container release 24.10) on another machine; "
        "default: the embedded server on this machine",
    )
    validate.add_argument(
        "--gpus",
        type=_gpu_ids,
        help="the serving machine's GPU ids (0,1 or none), so GPU placement is judged as Triton there "
        "judges it; default: this machine's, or unknown (warnings) with --triton-version",
    )


def _add_serve(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "repository",
        nargs="?",
        default="model_repository",
        help="a directory (default: model_repository) or the URI push printed (s3://, gs://, as://)",
    )
    _add_ports(serve)


def _add_push(push: argparse.ArgumentParser) -> None:
    push.add_argument("directory", nargs="?", default="model_repository", help="default: model_repository")
    push.add_argument(
        "uri",
        help="s3://bucket/prefix, gs://bucket/prefix or as://account/container/prefix "
        "(the repository goes under prefix/<digest>/)",
    )
    push.add_argument(
        "--endpoint-url",
        help="another endpoint than the cloud's: an S3-compatible store (http://127.0.0.1:9000), "
        "a GCS emulator, or an Azure account URL (http://127.0.0.1:10000/devstoreaccount1)",
    )
    push.add_argument(
        "--jobs",
        type=int,
        help="objects uploaded at once (default 8; the manifest goes last, alone)",
    )


def _add_demo(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--output", "-o", default="model_repository", help="repository directory")
    _add_ports(demo)


def _add_loadtest(loadtest: argparse.ArgumentParser) -> None:
    from generator.loadtest.options import add_cli_options  # the option table alone: no Locust

    add_cli_options(loadtest)


def _add_loadtest_worker(worker: argparse.ArgumentParser) -> None:
    worker.add_argument("--master-host", help="the master's address (its --master-bind-host)")
    worker.add_argument("--master-port", type=int, default=5557, help="the master's port (default 5557)")
    worker.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the master before giving up (default 60)",
    )
    worker.add_argument(
        "--print-locustfile",
        action="store_true",
        help="print the packaged locustfile's path (for plain `locust --worker -f PATH`) and exit",
    )


def _add_tune(tune: argparse.ArgumentParser) -> None:
    from generator.tune.options import OPTIONS  # the option table alone: no Locust

    add_options(tune, OPTIONS)


def _add_deploy(deploy: argparse.ArgumentParser) -> None:
    from generator.deploy.options import OPTIONS  # the option table alone: no spec, no templates

    add_options(deploy, OPTIONS)


def _add_nothing(parser: argparse.ArgumentParser) -> None:
    """For a command without options."""


#: Each command: its one-line help, and the function that declares its arguments (in ``--help`` order).
_COMMAND_PARSERS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "build": ("export, verify, configure and validate every model of a spec", _add_build),
    "validate": ("check a model repository the way Triton will load it", _add_validate),
    "serve": ("serve a repository with the embedded tritonserver (CPU)", _add_serve),
    "push": (
        "upload a repository to object storage under a content-addressed prefix; print its URI",
        _add_push,
    ),
    "demo": (
        "build the bundled example, serve it, send real requests over HTTP and gRPC, print results",
        _add_demo,
    ),
    "loadtest": (
        "load-test models on a Triton server with Locust and write a report (JSON, CSV, HTML)",
        _add_loadtest,
    ),
    "loadtest-worker": (
        "run a Locust worker for a `loadtest --master` on another machine (the packaged locustfile)",
        _add_loadtest_worker,
    ),
    "tune": (
        "search serving settings (instances, batching, threads) on a live Triton and write the winner back",
        _add_tune,
    ),
    "deploy": ("render and validate Kubernetes manifests for the repository", _add_deploy),
    "schema": ("print the JSON Schema of the spec file", _add_nothing),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generator",
        description="tritongen: YAML spec -> exported, verified models -> a validated Triton model repository.",
    )
    parser.add_argument("--version", action="version", version=f"tritongen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, add_arguments) in _COMMAND_PARSERS.items():
        add_arguments(commands.add_parser(name, help=summary))
    return parser


def _run_build(args: argparse.Namespace) -> int:
    from rich.status import Status
    from rich.text import Text

    from generator.build.run import build

    console = _console()
    with Status("building", console=console) as status:

        def progress(name: str, stage: str) -> None:
            status.update(Text(f"{stage} {name}".strip()))

        report = build(
            args.spec,
            args.output,
            args.device,
            args.gpus,
            args.templates,
            progress=progress,
            use_tuned=not args.no_tuned,
        )
    for name, entry in report.tuned.items():
        source = report.tuned_file.name if report.tuned_file else "the tuned settings file"
        console.print(
            Text.assemble(("tuned", "cyan"), f"   {name}: settings from {source} (trial {entry.trial})")
        )
    for line in report.pipelines:
        console.print(Text.assemble(("pipeline", "cyan"), f" {line}"))
    for model in report.models:
        parity = model.parity or {}
        figure = (
            _pipeline_figure(parity)
            if parity.get("reference")
            else f"max abs error {parity['max_abs_error']:.2e}"
            if parity.get("compared")
            else (
                "runs at " + ", ".join(f"batch {b}" for b in parity.get("batch_sizes", [])) if parity else ""
            )
        )
        line = (
            f" {model.name} v{model.version}: {model.status} ({model.platform}, "
            f"max_batch_size {model.max_batch_size}) {figure}"
            + (f", optimized: {' + '.join(model.optimized)}" if model.optimized else "")
            + f"  {model.seconds:.2f}s"
        )
        console.print(Text.assemble(("✓", "green"), line))
    for warning in report.warnings:
        _labelled(console, "warning", "yellow", warning)
    if report.carried_over:
        console.print(f"kept from the previous repository: {', '.join(report.carried_over)}")
    console.print(f"wrote {report.repository} in {report.seconds:.2f}s")
    return EXIT_OK


def _pipeline_figure(parity: dict[str, Any]) -> str:
    """A pipeline's end-to-end parity: ``matches sentence-transformers on 7 samples (min cosine ...)``."""
    figure = (
        f"min cosine {parity['min_cosine']:.7f}"
        if "min_cosine" in parity
        else f"max abs error {parity.get('max_abs_error', 0.0):.2e}"
    )
    return f"matches {parity['reference']} on {parity['samples']} samples ({figure})"


def _run_validate(args: argparse.Namespace) -> int:
    from rich.text import Text

    from generator.validate.run import validate_repository
    from generator.validate.schema import Server

    console = _console()
    if args.triton_version is not None:
        server = Server.named(args.triton_version, args.gpus)
    else:
        server = Server.this_machine(args.gpus)
    report = validate_repository(args.repository, server)
    for problem in report.problems:
        color = {"error": "red", "warning": "yellow"}.get(problem.severity, "cyan")
        _labelled(console, problem.severity, color, f"{problem.model}: {problem.message}")
    verdict = ("valid", "green") if report.ok else (f"{len(report.errors)} error(s)", "red")
    console.print(
        Text.assemble(
            f"{args.repository}: {len(report.models)} model(s), ",
            verdict,
            f", {len(report.warnings)} warning(s) (judged for {server.describe()})",
        )
    )
    return EXIT_OK if report.ok else EXIT_FAILED


def _serve_until_signal(server: Any, announce: Any) -> int:
    """Start the server, ``announce(endpoints)``, and block until Ctrl-C / SIGTERM (clean stop, exit 0)
    or until the server is down for good (exit 1).

    SIGTERM is handled from before the start: one that arrives while the server starts, or just after
    the announcement, stops it as cleanly as a later one. The server restarts itself after a crash; it
    is down for good only when it could not. Its log is then kept, and the error names it.
    """

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        announce(server.start())
        code = server.wait()
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    raise GeneratorError(
        server.failure
        or f"tritonserver exited unexpectedly with code {code}; see its log at {server.log_path}"
    )


def _print_endpoints(console: Any, endpoints: Any, repository: str) -> None:
    console.print(f"Triton is serving {repository}")
    console.print(f"  HTTP     {endpoints.http}")
    console.print(f"  gRPC     {endpoints.grpc}")
    console.print(f"  metrics  {endpoints.metrics}")


def _run_serve(args: argparse.Namespace) -> int:
    from generator.serve.launch import is_remote_repository
    from generator.serve.server import EmbeddedServer
    from generator.validate.run import validate_repository
    from generator.validate.schema import Server

    console = _console()
    if not is_remote_repository(args.repository):  # a pushed repository was validated before its push
        report = validate_repository(args.repository, Server.this_machine())
        report.raise_for_errors()
        for warning in report.warnings:
            _labelled(console, "warning", "yellow", f"{warning.model}: {warning.message}")
    server = EmbeddedServer(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        address=args.address,
    )

    def announce(endpoints: Any) -> None:
        _print_endpoints(console, endpoints, args.repository)
        console.print("Press Ctrl-C to stop.")

    return _serve_until_signal(server, announce)


def _run_push(args: argparse.Namespace) -> int:
    from generator.push.run import push
    from generator.validate.run import validate_repository

    if os.path.isdir(args.directory):  # else push names the missing directory
        validate_repository(args.directory).raise_for_errors()
    jobs = {} if args.jobs is None else {"jobs": args.jobs}
    result = push(args.directory, args.uri, endpoint_url=args.endpoint_url, **jobs)
    console = _console()
    console.print(
        f"pushed {args.directory}: {len(result.uploaded)} object(s) uploaded, "
        f"{len(result.skipped)} already there"
    )
    for name, value in result.environment.items():
        console.print(f"Triton reads it with {name}={value} in its environment")
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"serve it with: --model-repository={result.uri}")
    print(result.uri)
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    from generator.demo import run_demo

    console = _console()

    def say(line: str) -> None:
        console.print(line)

    run_demo(
        args.output,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        address=args.address,
        say=say,
    )
    return EXIT_OK


def _interrupt_main_greenlet() -> list[Any]:
    """Turn SIGTERM and SIGINT into KeyboardInterrupt in the main greenlet of a gevent (Locust) run.

    Python's own SIGINT handler raises in whichever greenlet runs when the signal arrives, often a Locust
    user, and the run would go on. Cancel the returned handlers when the run ends.
    """
    import gevent

    hub = gevent.get_hub()
    return [
        gevent.signal_handler(signum, lambda: hub.parent.throw(KeyboardInterrupt))
        for signum in (signal.SIGTERM, signal.SIGINT)
    ]


def _run_loadtest(args: argparse.Namespace) -> int:
    from dataclasses import fields

    # The load side first: importing Locust patches the standard library for gevent, which must happen
    # before rich and the rest import it. The report side (generator.loadtest.report) needs no such care.
    from generator.loadtest.run import LoadTestConfig, run_loadtest  # isort: skip

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table
    from rich.text import Text

    from generator.loadtest.report.write import steps_table, summary_table

    console = _console()
    config = LoadTestConfig(**{f.name: getattr(args, f.name) for f in fields(LoadTestConfig)})
    if config.master and config.expect_workers:
        host = config.master_bind_host or "127.0.0.1"
        _labelled(
            console,
            "master",
            "green",
            f"waiting for {config.expect_workers} Locust workers on {host}:{config.master_bind_port}; on each "
            f"load machine run `python -m generator loadtest-worker --master-host ADDRESS "
            f"--master-port {config.master_bind_port}`",
        )
    handlers = _interrupt_main_greenlet()
    columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("starting", total=None)

            def progress(p: Any) -> None:
                level = f" {p.level}/{p.levels}" if p.levels > 1 else ""
                bar.update(
                    task,
                    description=f"{p.stage}{level}: {p.users:g} users, {p.rps:,.0f} req/s, {p.failures} failed",
                    completed=p.elapsed,
                    total=p.planned or None,
                )

            result = run_loadtest(config, progress=progress)
    finally:
        for handler in handlers:
            handler.cancel()
    headers, rows = summary_table(result.report)
    table = Table(*headers)
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    console.print(table)
    headers, rows = steps_table(result.report)
    if rows:
        steps = Table(*headers, title="pipeline steps")
        for row in rows:
            steps.add_row(*(Text(str(cell)) for cell in row))
        console.print(steps)
    console.print(f"report: {result.files['html']} (also report.json, report.csv)")
    errors = _console(stderr=True)
    if result.aborted:
        _labelled(
            errors, "error", "red", f"the run was cut short: {result.aborted}; partial report in {args.out}"
        )
    for breach in result.breaches:
        _labelled(errors, "error", "red", f"--fail-if {breach}")
    return EXIT_OK if result.passed else EXIT_FAILED


def _run_tune(args: argparse.Namespace) -> int:
    # Locust (under the tune) patches the standard library for gevent: import it before rich and the rest.
    from generator.tune.run import run_tune  # isort: skip

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from generator.tune.options import config_from_args

    console = _console()
    config = config_from_args(args)
    handlers = _interrupt_main_greenlet()
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("starting", total=None)

            def progress(p: Any) -> None:
                bar.update(task, description=_tune_line(p))

            result = run_tune(config, progress=progress)
    except KeyboardInterrupt as interrupt:  # run_tune's TuneInterrupted says whether trials were saved
        saved = str(interrupt) or "no trial was measured, so no report was written"
        _labelled(
            _console(stderr=True),
            "interrupted",
            "yellow",
            f"{saved}; the spec and repository are unchanged",
        )
        return EXIT_INTERRUPTED
    finally:
        for handler in handlers:
            handler.cancel()
    return _print_tune(console, result)


def _tune_line(p: Any) -> str:
    if not p.model:
        return p.stage
    trials = f"/{p.trials}" if p.trials else ""
    line = f"{p.model} trial {p.trial}{trials} {p.stage}: {p.settings}"
    if p.load is not None and p.load.levels:
        line += f" [{p.load.users:g} users, {p.load.rps:,.0f} req/s]"
    return line + (f"  ({p.best})" if p.best else "")


def _print_tune(console: Any, result: Any) -> int:
    errors = _console(stderr=True)
    for note in result.report.get("notes", []):
        _labelled(console, "note", "yellow", note)
    for model, entry in result.report["models"].items():
        measured = sum(1 for t in entry.get("trials", []) if t["status"] == "measured")
        _labelled(
            console, "tuned", "green", f"{model}: {measured} trials measured; {entry.get('verdict', '')}"
        )
        winner = result.winners.get(model)
        if winner is not None:
            _labelled(console, "winner", "green", f"{model}: {winner.settings.describe()}")
    if result.tuned_file is not None:
        _labelled(console, "wrote", "green", f"{result.tuned_file} (build applies it); repository rebuilt")
    console.print(f"report: {result.files.get('html', result.files.get('json'))} (also tune.json)")
    if result.stopped:
        _labelled(errors, "error", "red", f"the search stopped early: {result.stopped}; nothing was written")
    for line in result.unmet.values():
        _labelled(errors, "error", "red", line)
    return EXIT_FAILED if result.stopped or result.unmet else EXIT_OK


def _run_loadtest_worker(args: argparse.Namespace) -> int:
    """Wait for the master's port, then become ``locust --worker`` on the packaged locustfile (exec)."""
    from generator.loadtest.distributed import LOCUSTFILE, wait_for_master, worker_command

    if args.print_locustfile:
        print(LOCUSTFILE)
        return EXIT_OK
    if not args.master_host:
        raise LoadTestError(
            "loadtest-worker needs --master-host ADDRESS: the machine running `loadtest --master`"
        )
    if not 0 < args.master_port < 65536:
        raise LoadTestError(f"--master-port must be 1 to 65535, not {args.master_port}")
    if args.connect_timeout <= 0:
        raise LoadTestError("--connect-timeout must be more than 0 seconds")
    wait_for_master(args.master_host, args.master_port, args.connect_timeout)
    command = worker_command(args.master_host, args.master_port, "INFO" if args.verbose else "WARNING")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # the worker is this process: a signal to it reaches Locust
    return EXIT_OK  # not reached


def _run_deploy(args: argparse.Namespace) -> int:
    from generator.deploy.manifests import KUBERNETES_VERSION, deploy
    from generator.deploy.options import config_from_args

    console = _console()
    result = deploy(config_from_args(args))
    for warning in result.warnings:
        _labelled(console, "warning", "yellow", warning)
    for model in result.models:
        groups = ", ".join(
            f"{g['count']} x {g['kind']}" + (f" on {g['gpus']}" if g["gpus"] else "") for g in model.groups
        )
        console.print(f" {model.model}: {groups or 'Triton default'} ({model.source})")
    console.print(f"image {result.image}; nvidia.com/gpu per pod: {result.gpus_per_pod}")
    if result.capacity is not None:
        for line in result.capacity.derivation:
            _labelled(console, "capacity", "cyan", line)
    console.print(
        f"wrote {len(result.files)} file(s) to {result.out}, valid for Kubernetes {KUBERNETES_VERSION} "
        f"(kubectl apply -k {result.out})"
    )
    return EXIT_OK


def _run_schema(args: argparse.Namespace) -> int:
    from generator.spec.models import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


_COMMANDS = {
    "build": _run_build,
    "validate": _run_validate,
    "serve": _run_serve,
    "push": _run_push,
    "demo": _run_demo,
    "loadtest": _run_loadtest,
    "loadtest-worker": _run_loadtest_worker,
    "tune": _run_tune,
    "deploy": _run_deploy,
    "schema": _run_schema,
}


def _quiet_frameworks(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        warnings.filterwarnings("ignore")
        for noisy in ("torch", "onnxscript", "onnx_ir", "tf2onnx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _quiet_frameworks(args.verbose)
    errors = _console(stderr=True)
    try:
        return _COMMANDS[args.command](args)
    except GeneratorError as exc:
        for line in exc.problems:
            _labelled(errors, "error", "red", line)
        return EXIT_FAILED
    except KeyboardInterrupt:
        errors.print("interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:  # the file system refused: a path too long, no space, no permission
        if args.debug:
            raise
        _labelled(errors, "error", "red", os_error_line(exc))
        return EXIT_FAILED
    except (Exception, SystemExit) as exc:
        # SystemExit here did not come from argparse (parsing is done): code we ran tried to exit.
        if args.debug:
            raise
        what = f"{type(exc).__name__}: {exc}".rstrip(": ")
        _labelled(errors, "internal error", "red", f"{what} (run with --debug for the traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
