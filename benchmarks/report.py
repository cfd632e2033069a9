"""The readable side of scripts/bench: the table on stderr and the summary against issue 5's targets."""

from __future__ import annotations

import sys
from typing import Any

TARGETS = {
    "noop_1node_vs_fastest_peer": 1.5,
    "noop_3node_vs_1node": 1.5,
    "roundtrips_per_job": 3.0,
    "idle_submit_to_start_p99_ms": 20.0,
    "submit_16_in_flight_vs_bare": 0.5,  # issue 9: half the bare aiohttp handler's rate, 16 in flight
    "submit_16_in_flight_p99_ms": 20.0,
    "script_step_vs_bare": 1.2,
    "node_rss_at_rest_mb": 80.0,
    "redis_bytes_per_queued_job": 1536.0,
    "script_warm_vs_spawn": 10.0,  # issue 11: warm scripts/s vs spawn, one node, 100 slots
    "script_warm_overhead_p50_ms": 3.0,  # issue 11: step duration minus the script's own time
    "node_and_runner_rss_at_rest_mb": 120.0,  # issue 11
}


def _err(line: str = "") -> None:
    print(line, file=sys.stderr, flush=True)


def _g(data: Any, *path: Any, default: Any = None) -> Any:
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return default
        if data is None:
            return default
    return data


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, list):
        return "/".join(_fmt(item, digits) for item in value)
    return str(value)


def _pcts(summary: Any) -> str:
    if not isinstance(summary, dict) or not summary.get("n"):
        return "-"
    return f"{summary['p50']:.0f}/{summary['p95']:.0f}/{summary['p99']:.0f}"


ROW = "{:<7} {:>2} {:>6} {:>9} {:>9} {:>9} {:>15} {:>15} {:>6} {:>6} {:>6} {:>13} {:>7}"
HEADER = ROW.format("scen", "N", "jobs", "submit/s", "drain/s", "backlog/s", "wait p50/95/99",
                    "finish p50/95/99", "cmd/j", "RT/j", "RTb/j", "RSS rest/peak", "B/qjob")


def print_run(run: dict[str, Any], *, header: bool = True) -> None:
    if header:
        _err(HEADER)
    if "error" in run:
        _err(f"{run.get('scenario', '?'):<7} {run.get('nodes', '?'):>2}  ERROR {run['error'][:150]}")
        return
    live, backlog = run.get("live", {}), run.get("backlog", {})
    rest = max(_g(run, "rss_mb", "rest", default=[0]) or [0])
    peak = max(_g(run, "rss_mb", "peak_hwm", default=[0]) or [0])
    _err(ROW.format(
        run["scenario"], run["nodes"], run["jobs"], _fmt(live.get("submit_rate")), _fmt(live.get("drain_rate")),
        _fmt(backlog.get("drain_rate")), _pcts(live.get("queue_wait_ms")), _pcts(live.get("submit_to_finish_ms")),
        _fmt(_g(live, "redis", "commands_per_job"), 1), _fmt(_g(live, "redis", "roundtrips_per_job_est"), 2),
        _fmt(_g(backlog, "redis", "roundtrips_per_job_est"), 2), f"{rest:.0f}/{peak:.0f} MB",
        _fmt(_g(run, "redis_memory_per_queued_job", "bytes_per_job"))))


def print_tables(result: dict[str, Any]) -> None:
    env = result.get("environment", {})
    _err()
    _err(f"== SecAuto bench  ({env.get('cpu_count')} CPU {env.get('cpu_model')}, Python {env.get('python')}, "
         f"Redis {env.get('redis_version')}, commit {str(env.get('git_commit', ''))[:10]}"
         f"{' dirty' if env.get('git_dirty') else ''}, load at start {env.get('loadavg_at_start')})")
    _err("drain/s: first submit -> last completion (HTTP batch submit while draining); backlog/s: jobs queued "
         "while nodes were frozen, first start -> last completion; wait = started-submitted, finish = "
         "completed-submitted (ms); cmd/j, RT/j: Redis commands and round-trips per job in the live run "
         "(RTb/j: backlog run, node side only), heartbeats subtracted; B/qjob: Redis bytes per queued job")
    load = max((env.get("loadavg_at_start") or [0])[:1] + (env.get("loadavg_at_end") or [0])[:1])
    if load > 0.5 * (env.get("cpu_count") or 1):
        _err(f"WARNING: load average {load} on {env.get('cpu_count')} CPU: other processes competed for the "
             f"CPU; every figure below is pessimistic (see environment.busiest_processes_at_start)")
    runs = result.get("runs", [])
    _err(HEADER)
    for run in runs:
        print_run(run, header=False)
    for run in runs:
        logs = run.get("node_logs") or {}
        for problem in run.get("node_problems", []):
            _err(f"  {run['scenario']} x{run['nodes']}: {problem}")
        if logs.get("lines"):
            _err(f"  {run['scenario']} x{run['nodes']}: nodes logged {logs['lines']} warning/error line(s), e.g. "
                 f"{logs['samples'][0][:200]}")
    probes = [run for run in runs if "idle_submit_to_start" in run]
    if probes:
        _err()
        _err("idle cluster: submit-to-start p50/p99/max ms")
        for run in probes:
            idle = run["idle_submit_to_start"]["submit_to_start_ms"]
            _err(f"  {run['nodes']} node(s): {_fmt(idle.get('p50'), 1)}/{_fmt(idle.get('p99'), 1)}/"
                 f"{_fmt(idle.get('max'), 1)} ms")
    print_submit_probe(result.get("submit_probe"))
    cost = result.get("script_cost")
    if cost:
        _err()
        if "error" in cost:
            _err(f"run_script cost: ERROR {cost['error']}")
        else:
            _err(f"run_script cost (medians, {cost['runs']} runs): bare {cost['bare_spawn_ms']['p50']:.1f} ms, "
                 f"job execution {cost['job_execution_ms']['p50']:.1f} ms (x{cost['ratio_job_execution_vs_bare']}), "
                 f"step {_fmt(_g(cost, 'step_duration_ms', 'p50'), 1)} ms (x{cost.get('ratio_step_vs_bare', '-')}), "
                 f"client round trip {cost['client_round_trip_ms']['p50']:.1f} ms "
                 f"(x{cost['ratio_client_round_trip_vs_bare']})")
    print_script_runners(result.get("script_runners"))
    comp = result.get("compare")
    if comp:
        _err()
        _err(f"peers ({comp['jobs']} jobs, concurrency {comp['concurrency']}, one worker process each)")
        _err("  {:<8} {:<6} {:>10} {:>10} {:>8} {:>8} {:>9} {:>14}".format(
            "library", "task", "enqueue/s", "drain/s", "cmd/j", "RT/j", "B/qjob", "RSS rest/peak"))
        for peer in comp.get("results", []):
            if "skipped" in peer:
                _err(f"  {peer['library']:<8} {peer.get('task', ''):<6} skipped: {str(peer['skipped'])[:120]}")
                continue
            _err("  {:<8} {:<6} {:>10} {:>10} {:>8} {:>8} {:>9} {:>14}".format(
                peer["library"], peer["task"], _fmt(peer.get("enqueue_rate")), _fmt(peer.get("drain_rate")),
                _fmt(_g(peer, "redis_total", "commands_per_job"), 1),
                _fmt(_g(peer, "redis_total", "roundtrips_per_job_est"), 2),
                _fmt(peer.get("redis_memory_per_queued_job_bytes")),
                f"{(peer.get('rss_rest_kb') or 0) / 1024:.0f}/{(peer.get('rss_peak_kb') or 0) / 1024:.0f} MB"))
        for task, ratios in comp.get("ratios", {}).items():
            parts = []
            for name, item in ratios["peers"].items():
                if "skipped" in item:
                    parts.append(f"{name} skipped")
                elif task == "script":
                    warm, spawn = _fmt(item.get("ratio_warm"), 2), _fmt(item.get("ratio_spawn"), 2)
                    parts.append(f"{name} x{warm} (spawn x{spawn})")
                else:
                    backlog, live = _fmt(item.get("ratio_backlog"), 2), _fmt(item.get("ratio_live"), 2)
                    parts.append(f"{name} x{backlog} (live x{live})")
            label = "script warm" if task == "script" else task
            _err(f"  SecAuto {ratios['secauto_nodes']} node {label} drain / peer: " + ", ".join(parts))
    summary = result.get("summary", {})
    if summary.get("targets"):
        _err()
        _err("targets (issue 5):")
        for target in summary["targets"]:
            mark = {True: "PASS", False: "FAIL", None: "n/a "}[target["pass"]]
            _err(f"  {mark}  {target['name']}: {_fmt(target['value'], 2)} (target {target['op']} {target['target']})"
                 f"{'  ' + target['note'] if target.get('note') else ''}")
    _err(f"wall time {result.get('wall_s', '?')} s{'  (INTERRUPTED)' if result.get('interrupted') else ''}")


def print_submit_probe(probe: dict[str, Any] | None) -> None:
    if not probe:
        return
    _err()
    if "error" in probe:
        _err(f"single-submit probe: ERROR {probe['error']}")
        return
    _err(f"single-job POST /cluster/jobs, {probe['jobs_per_measurement']} requests x {probe['rounds']} round(s), "
         f"node at {probe['node_log_level']}: median rate, latency p50/p99 ms, rate vs bare")
    row = "  {:<20} {:>9} {:>11} {:>6}   {:>9} {:>11} {:>6}"
    _err(row.format("", "1 in flight", "p50/p99", "x bare", "16 in flight", "p50/p99", "x bare"))
    names = [name for name in ("bare", "node_submit", "node_submit_and_run", "node_submit_limited") if name in probe]
    for name in names:
        cells = []
        for parallel in (1, 16):
            entry = _g(probe, name, f"{parallel}_in_flight", default={})
            latency = entry.get("latency_ms", {})
            ratio = _g(probe, name, f"vs_bare_{parallel}_in_flight")
            cells += [f"{_fmt(entry.get('rate'))}/s", f"{_fmt(latency.get('p50'), 1)}/{_fmt(latency.get('p99'), 1)}",
                      f"x{_fmt(ratio, 2)}" if ratio is not None else ""]
        _err(row.format(name, *cells))
    cpu = ", ".join(f"{name} {_fmt(_g(probe, name, 'server_cpu_us_per_request'))} us (+ Redis "
                    f"{_fmt(_g(probe, name, 'redis_cpu_us_per_request'))})"
                    for name in names)
    _err(f"  server CPU per request: {cpu}")
    if "node_submit_limited" in probe:
        _err("  node_submit_limited: node_submit with a rate limit and a max_pending quota that never refuse")
    _err("  node_submit: jobs held back (delay), so the node only takes them in; node_submit_and_run: it also "
         "claims and runs them")


def print_script_runners(data: dict[str, Any] | None) -> None:
    if not data:
        return
    _err()
    if "error" in data:
        _err(f"script runners: ERROR {data['error']}")
        return
    drain = data.get("drain_rate", {})
    _err(f"script runners on one node ({data['jobs_per_round']} jobs x {data['rounds']} rounds per mode, "
         f"{data['slots']} slots, {data['script']}):")
    _err(f"  drain warm {_fmt(drain.get('warm'))}/s, spawn {_fmt(drain.get('spawn'))}/s: "
         f"x{_fmt(data.get('ratio_warm_vs_spawn'), 2)}")
    idle = data.get("idle_step_duration_ms", {})
    over = data.get("overhead_p50_ms", {})
    _err(f"  idle step p50: warm {_fmt(_g(idle, 'warm', 'p50'), 1)} ms, spawn {_fmt(_g(idle, 'spawn', 'p50'), 1)} ms; "
         f"script's own time p50 {_fmt(_g(data, 'script_own_time_ms', 'p50'), 2)} ms; overhead p50 warm "
         f"{_fmt(over.get('warm'), 2)} ms, spawn {_fmt(over.get('spawn'), 2)} ms")
    for detail in data.get("rounds_detail", []):
        cpu = detail.get("cpu_ms_per_job", {})
        _err(f"  round {detail['round']} {detail['mode']:<5} {_fmt(detail.get('drain_rate'))}/s, CPU ms per job: "
             + ", ".join(f"{name} {_fmt(value, 2)}" for name, value in cpu.items()))
    runner = data.get("runner", {})
    rss = data.get("rss_at_rest_mb", {})
    _err(f"  runner fork p50/p99 {_fmt(runner.get('fork_p50_ms'), 2)}/{_fmt(runner.get('fork_p99_ms'), 2)} ms, "
         f"send-to-pid p50/p99 {_fmt(runner.get('start_p50_ms'), 2)}/{_fmt(runner.get('start_p99_ms'), 2)} ms; "
         f"RSS at rest node {_fmt(rss.get('node'), 1)} + runner {_fmt(rss.get('runner'), 1)} = "
         f"{_fmt(rss.get('together'), 1)} MB")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    runs = [run for run in result.get("runs", []) if "error" not in run]

    def pick(scenario: str, nodes: int | None = None) -> dict[str, Any] | None:
        found = [run for run in runs if run["scenario"] == scenario and (nodes is None or run["nodes"] == nodes)]
        return min(found, key=lambda run: run["nodes"]) if found else None

    out: dict[str, Any] = {}
    for scenario in ("noop", "sleep", "script"):
        rates = {str(run["nodes"]): {"live": _g(run, "live", "drain_rate"), "backlog": _g(run, "backlog", "drain_rate"),
                                     "submit": _g(run, "live", "submit_rate")}
                 for run in runs if run["scenario"] == scenario}
        if rates:
            out[f"{scenario}_drain_rates"] = rates
    targets: list[dict[str, Any]] = []

    def target(name: str, value: Any, op: str, note: str = "") -> None:
        goal = TARGETS[name]
        ok = None if value is None else (value >= goal if op == ">=" else value < goal if op == "<" else value <= goal)
        targets.append({"name": name, "value": value, "op": op, "target": goal, "pass": ok, "note": note})

    noop_small = pick("noop")
    noop_nodes = sorted({run["nodes"] for run in runs if run["scenario"] == "noop"})
    comp = result.get("compare", {})
    fastest = None
    for peer in comp.get("results", []):
        usable = peer.get("task") == "noop" and "skipped" not in peer and peer.get("drain_rate")
        if usable and (fastest is None or peer["drain_rate"] > fastest["drain_rate"]):
            fastest = peer
    if fastest is not None and noop_small is not None:
        backlog = _g(noop_small, "backlog", "drain_rate")
        live = _g(noop_small, "live", "drain_rate")
        out["fastest_peer_noop"] = {"library": fastest["library"], "drain_rate": fastest["drain_rate"]}
        target("noop_1node_vs_fastest_peer", round(backlog / fastest["drain_rate"], 2) if backlog else None, ">=",
               f"backlog vs {fastest['library']} {fastest['drain_rate']:.0f}/s; live x"
               f"{(live or 0) / fastest['drain_rate']:.2f}")
    else:
        target("noop_1node_vs_fastest_peer", None, ">=", "needs --compare and the noop scenario")
    if len(noop_nodes) >= 2:
        one, many = pick("noop", noop_nodes[0]), pick("noop", noop_nodes[-1])
        assert one is not None and many is not None
        b1, bn = _g(one, "backlog", "drain_rate"), _g(many, "backlog", "drain_rate")
        l1, ln = _g(one, "live", "drain_rate"), _g(many, "live", "drain_rate")
        target("noop_3node_vs_1node", round(bn / b1, 2) if b1 and bn else None, ">=",
               f"{noop_nodes[-1]} vs {noop_nodes[0]} node(s), backlog; live x{(ln or 0) / (l1 or 1):.2f}")
    else:
        target("noop_3node_vs_1node", None, ">=", "needs --nodes 1,3 and the noop scenario")
    if noop_small is not None:
        target("roundtrips_per_job", _g(noop_small, "live", "redis", "roundtrips_per_job_est"), "<=",
               f"noop, {noop_small['nodes']} node(s), live incl. submit; node side only (backlog): "
               f"{_g(noop_small, 'backlog', 'redis', 'roundtrips_per_job_est')}")
    idle = [_g(run, "idle_submit_to_start", "submit_to_start_ms", "p99") for run in runs]
    idle = [value for value in idle if value is not None]
    target("idle_submit_to_start_p99_ms", max(idle) if idle else None, "<", "worst node count")
    probe = result.get("submit_probe") or {}
    target("submit_16_in_flight_vs_bare", _g(probe, "node_submit", "vs_bare_16_in_flight"), ">=",
           f"node submit path at {probe.get('node_log_level', '-')} vs benchmarks/bare.py; also running the "
           f"jobs: x{_fmt(_g(probe, 'node_submit_and_run', 'vs_bare_16_in_flight'), 2)}")
    target("submit_16_in_flight_p99_ms", _g(probe, "node_submit", "16_in_flight", "latency_ms", "p99"), "<",
           f"node submit path; also running the jobs: "
           f"{_fmt(_g(probe, 'node_submit_and_run', '16_in_flight', 'latency_ms', 'p99'), 1)} ms")
    cost = result.get("script_cost") or {}
    target("script_step_vs_bare", cost.get("ratio_job_execution_vs_bare"), "<=",
           f"job execution vs bare spawn (medians); step alone x{cost.get('ratio_step_vs_bare', '-')}")
    runners = result.get("script_runners") or {}
    target("script_warm_vs_spawn", runners.get("ratio_warm_vs_spawn"), ">=",
           f"drain/s on one node, best round of each: warm {_fmt(_g(runners, 'drain_rate', 'warm'))}, "
           f"spawn {_fmt(_g(runners, 'drain_rate', 'spawn'))}")
    target("script_warm_overhead_p50_ms", _g(runners, "overhead_p50_ms", "warm"), "<",
           "idle node, single jobs: step duration_ms p50 minus the script's own time p50")
    target("node_and_runner_rss_at_rest_mb", _g(runners, "rss_at_rest_mb", "together"), "<",
           f"fork p50/p99 {_fmt(_g(runners, 'runner', 'fork_p50_ms'), 2)}/"
           f"{_fmt(_g(runners, 'runner', 'fork_p99_ms'), 2)} ms")
    rest = [value for run in runs for value in _g(run, "rss_mb", "rest", default=[])]
    target("node_rss_at_rest_mb", max(rest) if rest else None, "<", "largest node")
    if noop_small is not None:
        target("redis_bytes_per_queued_job", _g(noop_small, "redis_memory_per_queued_job", "bytes_per_job"), "<",
               "noop job")
    out["targets"] = targets
    return out
