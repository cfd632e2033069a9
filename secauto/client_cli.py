"""Client commands of the ``secauto`` command line: ``submit``, ``jobs``, ``cluster``, ``dlq``, ``events``,
``schedules``, ``pause``, ``resume``, ``trigger``.

They talk to a node given by ``--url`` (default ``$SECAUTO_URL``, else http://localhost:8080) with the
key in ``$SECAUTO_API_KEY`` (or ``--api-key``). Output is a human table by default and JSON with
``--json``. Exit codes: 0 success, 1 the job failed or was cancelled (``submit --wait``) or the node
refused the request, 2 bad usage (unreadable playbook or context, no key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from secauto.client import FINISHED_STATUSES, UNFINISHED_STATUSES, SecautoClient, SecautoError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_URL = "http://localhost:8080"


class UsageError(Exception):
    """A mistake in the command line itself (exit code 2)."""


def add_client_commands(commands: Any) -> None:
    """Register the client subcommands on the ``secauto`` parser's subparsers."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", default=os.environ.get("SECAUTO_URL", DEFAULT_URL),
                            help="the node's base URL (default: $SECAUTO_URL or http://localhost:8080)")
        parser.add_argument("--api-key", default=None, help="API key (default: $SECAUTO_API_KEY)")
        parser.add_argument("--ca-file", default=os.environ.get("SECAUTO_CA_FILE") or None,
                            help="CA certificate (PEM) of an https:// node (default: $SECAUTO_CA_FILE)")
        parser.add_argument("--json", action="store_true", help="print JSON instead of tables")

    submit = commands.add_parser("submit", help="submit a playbook as a cluster job")
    submit.add_argument("playbook", help="a playbook file (YAML/JSON), or the name of one on the node")
    submit.add_argument("--context", default="{}", help="context as JSON, or @FILE")
    submit.add_argument("--priority", type=int, default=None)
    submit.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    submit.add_argument("--affinity", default=None)
    submit.add_argument("--depends-on", action="append", default=[], metavar="JOB_ID",
                        help="wait until this job completed (repeatable)")
    submit.add_argument("--on-dependency-failure", choices=["cancel", "run"], default=None,
                        help="when a dependency fails: cancel this job (the default) or run it anyway")
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends; exit 1 if it failed")
    submit.add_argument("--timeout", type=float, default=3600.0, help="how long --wait waits (seconds)")
    common(submit)

    jobs = commands.add_parser("jobs", help="list jobs, or show one")
    jobs.add_argument("job_id", nargs="?", help="show this job")
    jobs.add_argument("--status", default=None, choices=sorted(FINISHED_STATUSES | UNFINISHED_STATUSES))
    jobs.add_argument("--tag", default=None)
    jobs.add_argument("--node", default=None)
    jobs.add_argument("--limit", type=int, default=20)
    common(jobs)

    cluster = commands.add_parser("cluster", help="show the cluster: nodes, leader, queue")
    common(cluster)

    dlq = commands.add_parser("dlq", help="the dead-letter queue: list, requeue ID, delete ID")
    dlq.add_argument("action", nargs="?", default="list", choices=["list", "requeue", "delete"])
    dlq.add_argument("job_id", nargs="?")
    dlq.add_argument("--limit", type=int, default=50)
    common(dlq)

    schedules = commands.add_parser("schedules", help="list schedules, or show one with its history")
    schedules.add_argument("name", nargs="?", help="show this schedule")
    common(schedules)

    for verb, text in (("pause", "pause a schedule (its slots are recorded paused)"),
                       ("resume", "resume a paused schedule from now"),
                       ("trigger", "run one job of a schedule now")):
        command = commands.add_parser(verb, help=text)
        command.add_argument("name", help="the schedule")
        if verb != "trigger":
            command.add_argument("--note", default=None, help="why (shown with the schedule)")
        common(command)

    events = commands.add_parser("events", help="follow the cluster's events (Ctrl-C to stop)")
    events.add_argument("--job", default=None, help="only this job's events")
    events.add_argument("--type", default=None, help="an event type, or a family like job.")
    common(events)


CLIENT_COMMANDS = frozenset({"submit", "jobs", "cluster", "dlq", "events", "schedules", "pause", "resume", "trigger"})


def run_client_command(args: argparse.Namespace) -> int:
    """Run one client subcommand; errors become a message on stderr and an exit code."""
    key = args.api_key or os.environ.get("SECAUTO_API_KEY")
    if not key:
        print("secauto: set SECAUTO_API_KEY (or pass --api-key)", file=sys.stderr)
        return EXIT_USAGE
    if args.ca_file and not os.path.isfile(args.ca_file):
        print(f"secauto: --ca-file {args.ca_file!r} is not a readable file", file=sys.stderr)
        return EXIT_USAGE
    handlers = {"submit": _submit, "jobs": _jobs, "cluster": _cluster, "dlq": _dlq, "events": _events,
                "schedules": _schedules, "pause": _pause, "resume": _pause, "trigger": _trigger}
    try:
        return asyncio.run(_with_client(args, key, handlers[args.command]))
    except UsageError as exc:
        print(f"secauto {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SecautoError as exc:
        print(f"secauto {args.command}: {exc}", file=sys.stderr)
        for detail in exc.details:
            print(f"  {detail.get('path') or detail.get('field')}: {detail.get('message')}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


async def _with_client(args: argparse.Namespace, key: str, handler: Any) -> int:
    async with SecautoClient(args.url, key, ca_file=args.ca_file) as client:
        result: int = await handler(client, args)
        return result


def _emit(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def table(rows: list[list[str]], headers: list[str], out: TextIO | None = None) -> None:
    """Print rows as an aligned text table."""
    out = out or sys.stdout
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for line in [headers, *rows]:
        out.write("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip() + "\n")


def _load_context(raw: str) -> dict[str, Any]:
    try:
        text = Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw
        value = json.loads(text)
    except OSError as exc:
        raise UsageError(f"--context: cannot read {raw[1:]} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--context: not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise UsageError("--context: must be a JSON object")
    return value


def _load_playbook(name: str) -> list[Any] | str:
    """A local file's steps, or the name of a playbook on the node."""
    path = Path(name)
    if not path.is_file():
        if "/" in name or name.endswith((".json", ".yaml", ".yml")):
            raise UsageError(f"no playbook file {name}")
        return name
    from secauto.engine import PlaybookInvalid, load_playbook_file

    try:
        document = load_playbook_file(path)
    except PlaybookInvalid as exc:
        raise UsageError(f"{name}: {exc}") from None
    if isinstance(document, dict) and isinstance(document.get("steps"), list):
        return list(document["steps"])
    if not isinstance(document, list):
        raise UsageError(f"{name}: a playbook is a list of steps")
    return document


async def _submit(client: SecautoClient, args: argparse.Namespace) -> int:
    playbook = _load_playbook(args.playbook)
    job_id = await client.submit(playbook, _load_context(args.context), priority=args.priority,
                                 tags=args.tag or None, affinity=args.affinity, depends_on=args.depends_on or None,
                                 on_dependency_failure=args.on_dependency_failure)
    if not args.wait:
        _emit({"job_id": job_id, "status": "submitted"}) if args.json else print(job_id)
        return EXIT_OK
    job = await _follow(client, job_id, limit=args.timeout, quiet=args.json)
    if args.json:
        _emit(job)
    return EXIT_OK if job["status"] == "completed" else EXIT_FAILED


async def _follow(client: SecautoClient, job_id: str, *, limit: float, quiet: bool) -> dict[str, Any]:
    """Poll the job, showing its progress on stderr (one line per change; a ticking clock on a TTY)."""
    out = sys.stderr
    tty = out.isatty() and not quiet
    started = time.monotonic()
    last = None
    async with asyncio.timeout(limit):
        while True:
            job = await client.get_job(job_id)
            state = (job["status"], job.get("assigned_to"), job.get("attempt"), tuple(job.get("waiting_on") or ()))
            elapsed = time.monotonic() - started
            if not quiet and state != last:
                where = f" on {job['assigned_to']}" if job.get("assigned_to") and job["status"] == "running" else ""
                attempt = f" (attempt {job['attempt']})" if job.get("attempt", 0) > 1 else ""
                if job["status"] == "waiting" and job.get("waiting_on"):
                    where = f" on {', '.join(job['waiting_on'])}"
                out.write(("\r" if tty else "") + f"{job_id}: {job['status']}{where}{attempt}  [{elapsed:.1f}s]\n")
                last = state
            elif tty:
                out.write(f"\r  ... {elapsed:.1f}s")
            out.flush()
            if job["status"] in FINISHED_STATUSES:
                if not quiet:
                    _describe_end(job, out)
                return job
            await asyncio.sleep(0.25)


def _describe_end(job: dict[str, Any], out: TextIO) -> None:
    for result in job.get("results") or []:
        error = f"  {result.get('error')}" if result.get("error") else ""
        runner = f" ({result['runner']})" if result.get("runner") else ""  # run_script: warm or spawn
        out.write(f"  {result.get('status', '?'):9} {result.get('name', '?')}  "
                  f"{result.get('duration_ms', 0):.0f} ms{runner}{error}\n")
    if job.get("error"):
        out.write(f"  error: {job['error']}\n")


async def _jobs(client: SecautoClient, args: argparse.Namespace) -> int:
    if args.job_id:
        job = await client.get_job(args.job_id)
        if args.json:
            _emit(job)
        else:
            for field in ("id", "status", "playbook_name", "priority", "tags", "assigned_to", "attempt", "retry_count",
                          "max_retries", "submitted_at", "submitted_by", "started_at", "completed_at", "reason",
                          "error", "depends_on", "waiting_on"):
                print(f"{field:13} {job.get(field)}")
            _describe_end({**job, "error": None}, sys.stdout)
        return EXIT_OK
    jobs, cursor = await client.list_jobs(status=args.status, tag=args.tag, node=args.node, limit=args.limit)
    if args.json:
        _emit({"jobs": jobs, "next_cursor": cursor})
        return EXIT_OK
    table([[job["id"], job["status"], job.get("assigned_to") or "-", str(job.get("attempt", 0)),
            job["submitted_at"], ",".join(job.get("tags") or []) or "-"] for job in jobs],
          ["JOB", "STATUS", "NODE", "ATTEMPT", "SUBMITTED", "TAGS"])
    return EXIT_OK


async def _cluster(client: SecautoClient, args: argparse.Namespace) -> int:
    view = await client.cluster()
    if args.json:
        _emit(view)
        return EXIT_OK
    print(f"cluster {view['cluster_name']}: {view['total_nodes']} node(s), leader {view.get('leader') or '-'}, "
          f"{view['queue_size']} queued")
    table([[node["id"] + (" *" if node["id"] == view.get("leader") else ""), node["status"],
            f"{node['host']}:{node['port']}", f"{node['load']:.2f}", str(node["jobs_running"]),
            str(node["jobs_completed"]), str(node["jobs_failed"]), node["last_seen"]] for node in view["nodes"]],
          ["NODE", "STATUS", "ADDRESS", "LOAD", "RUNNING", "COMPLETED", "FAILED", "LAST SEEN"])
    return EXIT_OK


async def _dlq(client: SecautoClient, args: argparse.Namespace) -> int:
    if args.action in ("requeue", "delete"):
        if not args.job_id:
            raise UsageError(f"dlq {args.action} needs a job id")
        answer = await (client.requeue_dead_letter(args.job_id) if args.action == "requeue"
                        else client.delete_dead_letter(args.job_id))
        _emit(answer) if args.json else print(f"{args.job_id}: {'requeued' if args.action == 'requeue' else 'deleted'}")
        return EXIT_OK
    dlq = await client.dead_letters(limit=args.limit)
    if args.json:
        _emit(dlq)
        return EXIT_OK
    print(f"{dlq['size']} job(s) in the dead-letter queue")
    table([[job["id"], job.get("reason") or "-", str(job.get("attempt", 0)), job.get("completed_at") or "-",
            (job.get("error") or "")[:60]] for job in dlq["jobs"]], ["JOB", "REASON", "ATTEMPTS", "FAILED AT", "ERROR"])
    return EXIT_OK


async def _events(client: SecautoClient, args: argparse.Namespace) -> int:
    async for event in client.events(job_id=args.job, kind=args.type):
        if args.json:
            sys.stdout.write(json.dumps(event) + "\n")
        else:
            extra = " ".join(f"{key}={event[key]}" for key in ("job_id", "node_id", "status", "attempt", "reason")
                             if event.get(key) is not None)
            sys.stdout.write(f"{event['timestamp']}  {event['type']:17} {extra}\n")
        sys.stdout.flush()
    return EXIT_OK


def _timing(schedule: dict[str, Any]) -> str:
    if schedule.get("cron"):
        zone = schedule.get("timezone") or "UTC"
        return f"{schedule['cron']} ({zone})" if zone != "UTC" else str(schedule["cron"])
    return f"every {schedule.get('every'):g}s"


async def _schedules(client: SecautoClient, args: argparse.Namespace) -> int:
    if args.name:
        schedule = await client.schedule(args.name)
        if args.json:
            _emit(schedule)
            return EXIT_OK
        state = "paused" + (f" ({schedule['pause_note']})" if schedule.get("pause_note") else "") \
            if schedule["paused"] else ("enabled" if schedule["enabled"] else "disabled")
        last = schedule.get("last_fire") or {}
        for label, value in (("name", schedule["name"]), ("timing", _timing(schedule)), ("state", state),
                             ("managed_by", schedule["managed_by"]),
                             ("playbook", schedule.get("playbook_name") or "(inline)"),
                             ("overlap", schedule["overlap"]),
                             ("catchup", f"{schedule['catchup']} (window {schedule['catchup_window']:g}s)"),
                             ("last_fire", f"{last.get('slot')} {last.get('job_id')}" if last else "-"),
                             ("next_fires", ", ".join(schedule["next_fires"]) or "-")):
            print(f"{label:11} {value}")
        if schedule["history"]:
            print()
            table([[entry["slot"] + (f" .. {entry['until']}" if entry.get("until") else ""), entry["outcome"],
                    entry.get("job_id") or "-"] for entry in schedule["history"]], ["SLOT", "OUTCOME", "JOB"])
        return EXIT_OK
    schedules = await client.schedules()
    if args.json:
        _emit({"schedules": schedules})
        return EXIT_OK
    table([[item["name"], _timing(item), "paused" if item["paused"] else ("on" if item["enabled"] else "off"),
            (item["next_fires"] or ["-"])[0], (item.get("last_fire") or {}).get("slot") or "-", item["managed_by"]]
           for item in schedules], ["SCHEDULE", "TIMING", "STATE", "NEXT", "LAST FIRE", "MANAGED BY"])
    return EXIT_OK


async def _pause(client: SecautoClient, args: argparse.Namespace) -> int:
    schedule = await (client.pause_schedule(args.name, args.note) if args.command == "pause"
                      else client.resume_schedule(args.name, args.note))
    if args.json:
        _emit(schedule)
    else:
        nxt = (schedule["next_fires"] or ["-"])[0]
        print(f"{args.name}: paused" if schedule["paused"] else f"{args.name}: running, next {nxt}")
    return EXIT_OK


async def _trigger(client: SecautoClient, args: argparse.Namespace) -> int:
    job_id = await client.trigger_schedule(args.name)
    _emit({"schedule": args.name, "job_id": job_id}) if args.json else print(job_id)
    return EXIT_OK
