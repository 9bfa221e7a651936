"""Run a plan across the nodes of a Ray cluster: Ray places, xfbench measures (``xfbench[ray]``, imported lazily).

Shape, per (task, node): the driver reserves the whole node for the task (a ``STRICT_PACK`` placement group of one
bundle holding every CPU of the node, and its GPUs, pinned to the node by its ``ray.io/node-id`` label), then starts
one small node agent there (a Ray actor with ``num_cpus=0``, no restarts, no task retries). The agent runs xfbench's
own local executor on its node (the function ``run_local`` it was given: ``compare.runner.run_plan``): fresh worker processes with
xfbench's thread, allocator and isolation settings, the interleaved timing rounds inside one machine (no network
call per round), and sends back each cell as it finishes (a streaming generator). Timed code never runs in a Ray
worker process: Ray sets ``OMP_NUM_THREADS`` in its workers and wakes each of them often; xfbench's workers set
their own thread counts before any framework is imported.

Placement:
- default: the tasks are spread over the cluster's nodes (those with at least one CPU), one task per node at a
  time, different tasks on different nodes in parallel; each cell runs where its task was placed;
- ``on_each=("LABEL", "VALUE")``: the whole matrix on every node that carries that Ray node label (``ray start
  --labels LABEL=VALUE``), to compare machines; backends are compared only within a node.
Threads: by default each node uses all of its usable cores (the same for every backend on it); ``threads`` fixes
the count everywhere.

Failures: a node agent that dies (``ActorDiedError``), a node that disappears, or an agent silent for longer than
the plan's timeout (then ``ray.kill``) makes the cells it had not sent ``error`` with the reason; every cell already
received is kept (the session writes each as it arrives); timed work is never re-run behind the user's back
(``max_restarts=0``, ``max_task_retries=0``): ``xfbench run --resume PATH`` runs what is missing.
Quiet: Ray's log lines are not forwarded (``log_to_driver=False``, ``logging_level`` ERROR, usage stats off, the
driver's own error-message printer routed to a logger). A cluster that xfbench starts itself (no address) is a
one-node cluster of this machine, shut down when the run ends, Ctrl-C included.
"""

from __future__ import annotations

import logging
import os
import platform
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from xfbench.compare.platforms.base import PlanExecutor
from xfbench.compare.results.cell import Cell, Device, Node
from xfbench.errors import XfbenchError
from xfbench.machine import cpu_name, usable_cores
from xfbench.progress import Progress, as_progress

LocalRunner = Callable[..., None]  # run_plan(plan, progress, on_cell, done=keys): the cells of a plan on this machine
ADDRESS_ENV = "XFBENCH_RAY_ADDRESS"
INSTALL_HINT = "pip install 'xfbench[ray]'"
AGENT_START_S = 120.0  # an agent's first answer (a new Ray worker process, importing xfbench)
logger = logging.getLogger("xfbench.ray")
# Ray prestarts one idle Python worker per CPU, each waking often: on an idle one-node cluster of this 2-core
# machine they were 1.9 of the 4.6% of one core that Ray used (benchmarks/ray_overhead.py); xfbench needs one
# worker per node (its agent). On clusters started with ``ray start``: RAY_enable_worker_prestart=0.
QUIET_NODE = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}


def import_ray() -> Any:
    """Ray (usage statistics off unless the user set them), or the one-line install hint."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise XfbenchError(f"running on Ray needs the ray package, which is not installed here; install it with: "
                           f"{INSTALL_HINT}") from None
    return ray


def parse_label(text: str | tuple[str, str] | None) -> tuple[str, str] | None:
    """``"LABEL=VALUE"`` -> ``("LABEL", "VALUE")``, or the one-line error.

    Example:
        >>> parse_label("cpu-kind=zen4")
        ('cpu-kind', 'zen4')
    """
    if text is None or isinstance(text, tuple):
        return text
    label, sep, value = str(text).partition("=")
    if not sep or not label.strip() or not value.strip():
        raise XfbenchError(f"--on-each takes LABEL=VALUE (a Ray node label, e.g. --on-each cpu-kind=zen4), "
                           f"got {text!r}")
    return label.strip(), value.strip()


# ------------------------------------------------------------------------------------------- the node agent
def node_facts() -> dict[str, Any]:
    """What the agent tells the driver about its node (runs on the node)."""
    ray = import_ray()
    return {"pid": os.getpid(), "hostname": socket.gethostname() or platform.node(), "cpu": cpu_name(),
            "cores": os.cpu_count(), "usable_cores": usable_cores(), "ray_version": ray.__version__,
            "node_id": ray.get_runtime_context().get_node_id()}


class NodeAgent:
    """Runs one sub-plan (one task, this node; the cells whose keys are in ``done`` skipped) with ``run_local`` (the
    local executor) and streams what happens, as dicts:
    ``{"kind": "progress", "text"}``, ``{"kind": "cell", "cell"}``, then ``{"kind": "end", "error"}``."""

    def info(self) -> dict[str, Any]:
        return node_facts()

    def run(self, run_local: LocalRunner, plan: Any, done: list[tuple[str, str, str]]) -> Any:
        events: queue.Queue[dict[str, Any]] = queue.Queue()

        def work() -> None:
            error = None
            try:
                run_local(plan, lambda text: events.put({"kind": "progress", "text": text}),
                         lambda cell: events.put({"kind": "cell", "cell": cell.to_dict()}),
                         done=[tuple(key) for key in done])
            except BaseException as failure:  # reported to the driver: the unit's missing cells become error
                error = f"{type(failure).__name__}: {failure}"
            events.put({"kind": "end", "error": error})

        # the local executor's workers die with the thread that started them (PR_SET_PDEATHSIG), so the thread
        # lives until the run is over; the generator only relays
        thread = threading.Thread(target=work, name="xfbench-node-agent", daemon=True)
        thread.start()
        while True:
            event = events.get()
            yield event
            if event["kind"] == "end":
                break
        thread.join()


# ------------------------------------------------------------------------------------------------ the driver
@dataclass
class _Unit:
    """One task on one node: its reservation, its agent, and the cells still expected from it."""

    task_index: int
    node: dict[str, Any]
    expected: set[tuple[str, str, str]]
    agent: Any = None
    group: Any = None
    stream: Any = None
    facts: dict[str, Any] = field(default_factory=dict)
    last_word: float = field(default_factory=time.monotonic)

    @property
    def node_id(self) -> str:
        return self.node["NodeID"]


def _quiet_driver(ray: Any) -> None:
    """Route the driver's printer of cluster error messages ("A worker died...") to a logger, not stdout."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:  # pragma: no cover - another Ray layout: its messages stay as Ray prints them
        return

    def to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            logger.debug("ray %s: %s", data.get("pid"), line)

    ray_worker.print_to_stdstream = to_log


class RayPlanExecutor(PlanExecutor):
    """The cells of a plan on the nodes of a Ray cluster (see the module's docstring).

    ``address``: a cluster to connect to (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); None: ``$XFBENCH_RAY_ADDRESS``
    when set, else a one-node cluster of this machine started for the run. ``on_each``: ``"LABEL=VALUE"`` to run the
    whole matrix on every node carrying that label. ``threads``: the thread count on every node (None: each node's
    usable cores). ``reserve_timeout``: seconds to wait for a node's CPUs to be free for a task. ``run_local``: what
    runs a sub-plan on a node (``compare.runner.run_plan``).
    """

    kind = "ray"

    def __init__(self, run_local: LocalRunner, address: str | None = None, on_each: str | tuple[str, str] | None = None,
                 threads: int | None = None, reserve_timeout: float = 300.0,
                 init_options: dict[str, Any] | None = None) -> None:
        self.run_local = run_local
        self.address = address if address is not None else os.environ.get(ADDRESS_ENV) or None
        self.on_each = parse_label(on_each)
        self.threads = threads
        self.reserve_timeout = reserve_timeout
        self.init_options = dict(init_options or {})
        self.ray: Any = None
        self.started_here = False
        self.nodes: list[dict[str, Any]] = []
        self.units: dict[int, _Unit] = {}  # live units by id: tests reach an agent's pid through here
        self.cluster_start_s: float | None = None
        self.costs: list[dict[str, Any]] = []  # per unit: seconds to reserve the node and to start its agent

    # -------------------------------------------------------------------------------------------- set-up
    def check(self, plan: Any) -> None:
        ray = self.ray = import_ray()
        if not ray.is_initialized():
            _probe(self.address)
            options = {"log_to_driver": False, "logging_level": logging.ERROR, "include_dashboard": False,
                       **self.init_options}
            if self.address is None:  # a cluster of this machine, for the run: no idle Ray workers waiting
                options.setdefault("num_cpus", usable_cores())
                options.setdefault("_system_config", dict(QUIET_NODE))
            began = time.perf_counter()
            try:
                ray.init(address=self.address or "local", **options)  # "local": a new one, never another's
            except Exception as error:  # ConnectionError, ValueError, RuntimeError: Ray's own words, on one line
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray cluster"
                raise XfbenchError(f"cannot start or reach {where}: {' '.join(str(error).split())[:300]}") from None
            self.started_here = True
            self.cluster_start_s = round(time.perf_counter() - began, 3)
        _quiet_driver(ray)
        self.nodes = self._eligible_nodes()

    def _eligible_nodes(self) -> list[dict[str, Any]]:
        nodes = [node for node in self.ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) >= 1]
        if not nodes:
            raise XfbenchError("the Ray cluster has no live node with a CPU to run on")
        if self.on_each is None:
            return nodes
        label, value = self.on_each
        matching = [node for node in nodes if (node.get("Labels") or {}).get(label) == value]
        if not matching:
            present = sorted({f"{key}={val}" for node in nodes for key, val in (node.get("Labels") or {}).items()
                              if not key.startswith("ray.io/")})
            raise XfbenchError(f"no node of the Ray cluster carries the label {label}={value}; labels present: "
                               f"{', '.join(present) or 'none (ray start --labels KEY=VALUE)'}")
        return matching

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address or "local (started for this run)",
                "on_each": "=".join(self.on_each) if self.on_each else None,
                "threads": self.threads if self.threads is not None else "each node's usable cores",
                "nodes": [node["NodeID"] for node in self.nodes],
                "ray_version": getattr(self.ray, "__version__", None),
                "connect_s" if self.address else "cluster_start_s": self.cluster_start_s, "units": self.costs}

    def close(self) -> None:
        if self.ray is not None and self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
        self.started_here = False

    # ---------------------------------------------------------------------------------------------- a run
    def run(self, plan: Any, progress: Progress | None, on_cell: Callable[[Cell], None], done: list[Cell]) -> None:
        say = as_progress(progress)
        keys = plan.keys()

        def expected(task_index: int, node_id: str | None) -> set[tuple[str, str, str]]:
            name = plan.tasks[task_index].name
            finished = {cell.key for cell in done if node_id is None or cell.node_id == node_id}
            return {key for key in keys if key[0] == name and key not in finished}

        # the work of each node: every task (--on-each) or a share of one queue (spread)
        if self.on_each is not None:
            queues = {node["NodeID"]: deque(i for i in range(len(plan.tasks)) if expected(i, node["NodeID"]))
                      for node in self.nodes}
            shared: deque[int] = deque()
        else:
            queues = {node["NodeID"]: deque() for node in self.nodes}
            shared = deque(i for i in range(len(plan.tasks)) if expected(i, None))
        nodes = {node["NodeID"]: node for node in self.nodes}
        suspect = False  # a node agent was lost: check which nodes are still alive before placing more work

        def busy() -> set[str]:
            return {unit.node_id for unit in self.units.values()}

        def deliver(unit: _Unit, cell: Cell) -> None:
            unit.expected.discard(cell.key)
            cell.node = self._node(unit)
            on_cell(cell)
            say.advance()

        def fail(unit: _Unit, reason: str, node_failed: bool = True) -> None:
            nonlocal suspect
            say(f"{plan.tasks[unit.task_index].name} on {self._node(unit).name}: {reason}")
            for task, backend, device in sorted(unit.expected):
                deliver(unit, Cell(task, backend, Device(device), "error", error=reason, lost=True))
            self._end(unit)
            suspect = suspect or node_failed

        def drop_dead_nodes() -> None:
            """A node that is gone takes no more work: its queued tasks (--on-each) are lost; with no node left,
            every task still queued is."""
            alive, working = {node["NodeID"] for node in self.ray.nodes() if node.get("Alive")}, busy()
            for node_id in [node_id for node_id in nodes if node_id not in alive and node_id not in working]:
                node = nodes.pop(node_id)
                for index in queues.pop(node_id):
                    fail(_Unit(index, node, expected(index, node_id)), "the node is gone from the cluster", False)
            if not nodes:
                while shared:
                    index = shared.popleft()
                    fail(_Unit(index, self.nodes[0], expected(index, None)), "no live node is left in the cluster",
                         False)

        try:
            while any(queues.values()) or shared or self.units:
                if suspect and len(busy()) < len(nodes):  # a node with no live unit may be gone
                    suspect = False
                    drop_dead_nodes()
                for node_id, node in list(nodes.items()):  # every free node takes its next task
                    if node_id in busy():
                        continue
                    work = queues[node_id] or (shared if self.on_each is None else None)
                    if not work:
                        continue
                    index = work.popleft()
                    unit = _Unit(index, node, expected(index, node_id if self.on_each else None))
                    self.units[id(unit)] = unit
                    reason = self._start(unit, plan)
                    if reason is not None:
                        fail(unit, reason)
                self._pump(plan, say, deliver, fail)
        finally:
            for unit in list(self.units.values()):  # Ctrl-C or a failure of the driver: nothing left behind
                self._end(unit)

    def _start(self, unit: _Unit, plan: Any) -> str | None:
        """Reserve the node and start its agent on the unit's sub-plan; the reason when that fails."""
        ray = self.ray
        from ray.util import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        resources = unit.node.get("Resources", {})
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
        name = unit.node.get("NodeManagerHostname") or unit.node_id[:8]
        unit.group = placement_group([bundle], strategy="STRICT_PACK",
                                     name=f"xfbench-{os.getpid()}-{unit.task_index}-{unit.node_id[:8]}",
                                     bundle_label_selector=[{"ray.io/node-id": unit.node_id}])
        began = time.perf_counter()
        ready = unit.group.wait(timeout_seconds=self.reserve_timeout)
        cost = {"task": plan.tasks[unit.task_index].name, "node": unit.node_id,
                "reserve_s": round(time.perf_counter() - began, 3), "agent_start_s": None}
        self.costs.append(cost)
        if not ready:
            return (f"could not reserve node {name} ({cpus:g} CPUs) within {self.reserve_timeout:g} s: other work "
                    "holds its CPUs")
        agent_class = ray.remote(num_cpus=0, num_gpus=gpus, max_restarts=0, max_task_retries=0)(NodeAgent)
        unit.agent = agent_class.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            unit.group, placement_group_bundle_index=0)).remote()
        began = time.perf_counter()
        try:
            unit.facts = ray.get(unit.agent.info.remote(), timeout=AGENT_START_S)
        except Exception as error:  # GetTimeoutError, RayActorError, a node that went away
            return f"the node agent did not start: {_reason(error)}"
        cost["agent_start_s"] = round(time.perf_counter() - began, 3)
        node_cores = min(int(unit.facts.get("usable_cores") or cpus), int(cpus)) or 1
        threads = self.threads if self.threads is not None else node_cores
        if threads > node_cores:
            return f"--threads {threads} is more than the {node_cores} usable cores of node {name}"
        sub_plan = replace(plan, tasks=[plan.tasks[unit.task_index]], threads=threads)
        cells = sub_plan.keys()
        done = [key for key in cells if key not in unit.expected]  # finished before a resume
        unit.stream = unit.agent.run.remote(self.run_local, sub_plan, done)
        unit.last_word = time.monotonic()
        return None

    def _pump(self, plan: Any, say: Callable[[str], None], deliver: Callable[[_Unit, Cell], None],
              fail: Callable[..., None]) -> None:
        """Wait up to a second for the next event of any live agent and handle it; end silent agents."""
        ray = self.ray
        live = {id(unit.stream): unit for unit in self.units.values() if unit.stream is not None}
        if not live:
            return
        ready, _ = ray.wait([unit.stream for unit in live.values()], num_returns=1, timeout=1.0)
        for stream in ready:
            unit = live[id(stream)]
            try:
                event = ray.get(next(stream))
            except StopIteration:
                event = {"kind": "end", "error": None}
            except Exception as error:  # the agent or its node died: ActorDiedError, NodeDiedError, ...
                alive = any(node["NodeID"] == unit.node_id and node.get("Alive") for node in ray.nodes())
                fail(unit, f"{'the node agent died' if alive else 'the node left the cluster'}: {_reason(error)}")
                continue
            unit.last_word = time.monotonic()
            if event["kind"] == "progress":
                say(f"[{self._node(unit).name}] {event['text']}")
            elif event["kind"] == "cell":
                deliver(unit, Cell.from_dict(event["cell"]))
            else:
                if unit.expected:
                    fail(unit, f"the node agent ended without them: {event.get('error') or 'no reason given'}",
                         False)
                else:
                    self._end(unit)
        silent_limit = plan.timeout + 60.0  # the agent's own workers time out after plan.timeout per command
        for unit in list(live.values()):
            if id(unit) in self.units and time.monotonic() - unit.last_word > silent_limit:
                fail(unit, f"no word from the node agent for {silent_limit:g} s; it was stopped")

    def _node(self, unit: _Unit) -> Node:
        facts, resources = unit.facts, unit.node.get("Resources", {})
        labels = {key: value for key, value in (unit.node.get("Labels") or {}).items() if not key.startswith("ray.io/")}
        memory = resources.get("memory")
        return Node(id=unit.node_id, hostname=facts.get("hostname") or unit.node.get("NodeManagerHostname"),
                    address=unit.node.get("NodeManagerAddress"), cpu=facts.get("cpu"), cores=facts.get("cores"),
                    usable_cores=facts.get("usable_cores"), gpus=int(resources.get("GPU", 0)),
                    memory_gb=round(memory / 2**30, 1) if memory else None, labels=labels,
                    ray_version=facts.get("ray_version") or getattr(self.ray, "__version__", None),
                    agent_pid=facts.get("pid"))

    def _end(self, unit: _Unit) -> None:
        """Stop the unit's agent (its workers die with it) and free its node."""
        self.units.pop(id(unit), None)
        if unit.agent is not None:
            try:
                self.ray.kill(unit.agent, no_restart=True)
            except Exception:  # already dead
                pass
            unit.agent = None
        if unit.group is not None:
            from ray.util import remove_placement_group

            try:
                remove_placement_group(unit.group)
            except Exception:  # the cluster is going away
                pass
            unit.group = None


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` or ``ray://HOST:PORT`` address that does not answer is one line at once (Ray itself would
    retry for minutes, printing its own warnings)."""
    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise XfbenchError(f"--ray {address!r}: give auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise XfbenchError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}; is `ray start` "
                           "running there?") from None


def _reason(error: BaseException) -> str:
    """The first line of a Ray error, which spans many."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()
