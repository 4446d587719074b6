"""Where a job's items are computed: in this process (the runner's own pipeline) or on
Ray workers (:class:`RayExecutor`).

The runner (:func:`~.runner.run_job`) keeps the job folder, the manifest, the events
and every write on the driver whatever the executor; an executor only turns items
into results. A remote executor gets a :class:`ComputeContext` (the runner's hooks:
mark an item running, hand a result to the writer, record a failure) and calls
:meth:`RayExecutor.compute`; resume, per-item errors, cancel and events therefore
behave as with the local pipeline.

Ray is an optional extra (``pip install segdeck[ray]``); this module imports it only
when a Ray run starts.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segdeck.core.errors import SegdeckError, SetupError
from segdeck.core.jobs.base import Job
from segdeck.core.jobs.events import Message, Sink

#: Items sent ahead to each Ray worker, so that it never waits for the driver.
IN_FLIGHT_PER_WORKER = 2

#: How often the driver looks at the cancel event while it waits for workers (seconds).
_POLL = 0.1


class WorkerDied(SegdeckError):
    """A Ray worker died while it processed the item, on its second try too."""


class RemoteItemError(SegdeckError):
    """An item's error raised on a worker, as the one line a local run records.

    Exceptions travel back as text: not every exception class survives pickling
    (:class:`~segdeck.core.errors.ImageError` needs two arguments).
    """


@dataclass
class ComputeContext:
    """The runner's hooks for an executor that computes items elsewhere.

    Attributes
    ----------
    emit : Sink
        Sends an event (``events.jsonl``, ``job.log``, the caller's sink).
    stopping : callable
        True once the run must stop (cancel requested, or a systemic fault).
    mark_running, mark_pending : callable
        Record an item's manifest state (``item -> None``).
    deliver : callable
        ``(item, result, seconds) -> bool``: hand a computed result to the writer
        (waits while the write queue is full); False when the run stopped first (the
        item is then left pending).
    fail : callable
        ``(item, exc, seconds) -> None``: record a failed item (one line), or stop the
        run when ``exc`` is a systemic fault (disk full).
    fail_run : callable
        ``(line) -> None``: end the whole run as ``error`` with this line.
    log : callable
        ``(msg, *args) -> None``: write an error to ``job.log`` (a worker's traceback).
    """

    emit: Sink
    stopping: Callable[[], bool]
    mark_running: Callable[[str], None]
    mark_pending: Callable[[str], None]
    deliver: Callable[[str, Any, float], bool]
    fail: Callable[[str, BaseException, float], None]
    fail_run: Callable[[str], None]
    log: Callable[..., None]


def import_ray():
    """Import Ray, or raise :class:`SetupError` with one line naming the extra."""
    try:
        import ray
    except ImportError:
        raise SetupError("--executor ray needs Ray: pip install 'segdeck[ray]'") from None
    return ray


def setup_on_driver(job: Job) -> bool:
    """Whether the driver of a remote run calls ``job.setup`` too: yes unless the job
    class sets ``setup_on_driver = False`` (a job whose ``write`` and ``finalize`` need
    nothing from ``setup``, such as a model only ``process`` uses: the driver then
    neither loads it nor needs the GPU it asks for)."""
    return bool(getattr(job, "setup_on_driver", True))


def uses_gpu(job: Job) -> bool:
    """Whether a worker of ``job`` needs a GPU: the job's ``device`` parameter is ``cuda``,
    or ``auto`` on a cluster that has GPUs (jobs without ``device`` use CPUs)."""
    device = getattr(job.params, "device", None)
    if device == "cuda":
        return True
    if device == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) >= 1
    return False


# ------------------------------------------------------------------ worker side


@dataclass(frozen=True)
class _FileBytes:
    """An image file's bytes, for workers that cannot read the driver's files.

    Attributes
    ----------
    name : str
        The file's path on the driver (errors name it, as a local run would).
    blob : bytes
        The file's content.
    """

    name: str
    blob: bytes

    def load(self) -> Any:
        from segdeck.core import imageio
        from segdeck.core.errors import ImageError

        suffix = Path(self.name).suffix
        fd, tmp = tempfile.mkstemp(prefix=".segdeck-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.blob)
            return imageio.load_rgb(tmp)
        except ImageError as exc:  # name the driver's file, not the temporary copy
            raise ImageError(self.name, exc.reason) from None
        finally:
            os.unlink(tmp)


@dataclass(frozen=True)
class _Loaded:
    """What the driver's ``job.load`` returned (bytes mode, for jobs with their own load)."""

    data: Any


class _Worker:
    """One Ray actor: builds the job (and its model, in ``setup``) once, then processes
    items. Nothing here writes into the job folder."""

    def __init__(self, job_cls: type[Job], params, input_path: Path, job_dir: Path):
        self.job = job_cls(params, input_path, job_dir)

    def setup(self) -> tuple[str, Any, list]:
        """Run ``job.setup``.

        Returns
        -------
        tuple
            ``("ok", pid, events)``: this process's pid and the events setup sent; or
            ``("error", line, events)`` when setup raised.
        """
        from segdeck.core.jobs.runner import _one_line

        events: list = []
        try:
            self.job.setup(events.append)
        except Exception as exc:  # noqa: BLE001 - the run's error, as one line
            return "error", _one_line(exc), events
        return "ok", os.getpid(), events

    def process(self, item: str, payload: Any) -> tuple[Any, float, list]:
        """Load (unless the driver sent the data) and process one item.

        Returns
        -------
        tuple
            ``("ok", result, seconds, events)`` (the sub-step events it reported), or
            ``("error", line, traceback or None, events)`` when loading or processing
            raised (the traceback only for errors that are not segdeck's own).
        """
        import traceback

        from segdeck.core.jobs.runner import _one_line

        job = self.job
        events: list = []
        t = time.perf_counter()
        try:
            if payload is None:
                data = job.load(item)
            elif isinstance(payload, _FileBytes):
                data = payload.load()
            else:
                data = payload.data
            job._step_target, job._step_last = (item, events.append), 0.0
            try:
                result = job.process(item, data)
            finally:
                job._step_target = None
        except Exception as exc:  # noqa: BLE001 - one failed item, reported as text
            tb = None if isinstance(exc, SegdeckError) else "".join(traceback.format_exception(exc))
            return "error", _one_line(exc), tb, events
        return "ok", result, time.perf_counter() - t, events

    def teardown(self) -> None:
        """Run ``job.teardown``."""
        self.job.teardown()


# ------------------------------------------------------------------ driver side


class RayExecutor:
    """Compute a job's items on Ray actors; the driver keeps the manifest and writes.

    Parameters
    ----------
    address : str, optional
        Ray cluster address (``auto`` on a node of a running cluster,
        ``ray://head:10001`` for a Ray client). Default: ``RAY_ADDRESS``, else a local
        Ray started on this machine for the run.
    workers : int, optional
        Number of actors. Default: as many as the cluster's CPUs (GPUs for a job that
        uses a GPU) allow.
    send_bytes : bool
        Send the image files' bytes with the items (clusters without a shared file
        system) instead of their paths. Jobs with their own ``load`` send what it
        returns.
    local_cpus : int, optional
        CPUs of a local Ray started by this executor (default: all).

    Notes
    -----
    Each actor holds ``num_gpus=1`` when the job uses a GPU (:func:`uses_gpu`),
    ``num_cpus=1`` otherwise. A worker that dies mid-item is replaced; its items are
    retried once on another worker, then marked failed with the reason.
    """

    remote = True

    def __init__(self, address: str | None = None, workers: int | None = None, send_bytes: bool = False,
                 local_cpus: int | None = None):
        if workers is not None and workers < 1:
            raise ValueError("--ray-workers must be at least 1")
        self.address = address
        self.workers = workers
        self.send_bytes = send_bytes
        self.local_cpus = local_cpus
        #: pids of the live workers' processes (for tests and diagnostics)
        self.worker_pids: dict[Any, int] = {}

    def describe(self) -> str:
        """Where the items run, in words."""
        return f"Ray at {self.address or os.environ.get('RAY_ADDRESS') or 'a local Ray'}"

    def _init(self, ray) -> bool:
        """Connect to (or start) Ray unless this process already did; True when this
        call started the connection (and must shut it down).

        A local Ray started here costs ~2.5-4 s to start (mostly waiting for the raylet
        to register; 8-9 s on a loaded 2-core machine) and ~1.4 s to stop (graceful
        stops of its processes), whatever the run's size. Measured on Ray 2.60 without
        a measurable change: a small object store, ``log_to_driver=False``, usage stats
        off, no worker prestart, one CPU instead of two. ``ray.init`` on a background
        thread (to overlap the driver's listing) left the driver unable to reach the GCS
        (60 s timeout), so it stays here, on the calling thread. For many runs on one
        machine, start Ray once (``ray start --head``) and pass its address
        (``benchmarks/executors.py`` measures both)."""
        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS") or "local"
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
        if address == "local":
            kwargs.update(include_dashboard=False, num_cpus=self.local_cpus)
        main = threading.current_thread() is threading.main_thread()
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one line: which address, and why
            text = str(exc).strip().splitlines()
            raise SetupError(f"cannot connect to Ray at {address}: {text[0] if text else type(exc).__name__}") from None
        finally:
            for sig, handler in handlers.items():  # Ctrl+C keeps meaning "stop after the current item"
                if handler is not None:
                    signal.signal(sig, handler)
        return True

    def _payload(self, job: Job, item: str) -> Any:
        if not self.send_bytes:
            return None
        if type(job).load is Job.load:
            path = job.item_path(item)
            return _FileBytes(str(path), path.read_bytes())
        return _Loaded(job.load(item))

    def compute(self, job: Job, todo: list[str], ctx: ComputeContext) -> None:
        """Process ``todo`` on Ray workers, reporting through ``ctx``; returns when every
        item is delivered or failed, or when the run stops (items in flight are then
        left pending).

        Raises
        ------
        SetupError
            Ray is not installed or cannot be reached (one line).
        """
        ray = import_ray()
        from ray.exceptions import RayActorError, RayError

        started = self._init(ray)
        try:
            gpu = uses_gpu(job)
            if gpu and ray.cluster_resources().get("GPU", 0) < 1:
                raise SetupError("this job asks for a GPU per Ray worker (device = cuda) but the Ray cluster "
                                 "has none; use device = cpu or auto, or a cluster with GPUs")
        except BaseException:
            if started:
                ray.shutdown()
            raise
        actor_cls = ray.remote(_Worker)
        options = {"num_gpus": 1, "num_cpus": 0} if gpu else {"num_cpus": 1}
        if self.workers:
            n_workers = self.workers
        else:
            have = ray.cluster_resources().get("GPU" if gpu else "CPU", 1)
            n_workers = max(1, int(have))
        n_workers = min(n_workers, max(1, len(todo)))
        args = (type(job), job.params, job.input_path.resolve(), job.job_dir.resolve())
        actors: list = []  # ready workers
        starting: dict = {}  # setup ref -> actor
        everyone: list = []  # every actor made, killed at the end
        replacements_left = 2 * n_workers

        def start_worker() -> None:
            actor = actor_cls.options(**options).remote(*args)
            everyone.append(actor)
            starting[actor.setup.remote()] = actor

        todo_q: deque[str] = deque(todo)
        attempts: dict[str, int] = {}
        inflight: dict = {}  # result ref -> (item, actor)
        load: dict = {}
        first_setup = True
        try:
            for _ in range(n_workers):
                start_worker()
            ctx.emit(Message(text=f"{n_workers} Ray worker(s) starting ({'1 GPU' if gpu else '1 CPU'} each), "
                                  f"{self.describe()}"))
            while not ctx.stopping():
                for actor in actors:  # keep every worker busy
                    while load[actor] < IN_FLIGHT_PER_WORKER and todo_q and not ctx.stopping():
                        item = todo_q.popleft()
                        try:
                            payload = self._payload(job, item)
                        except Exception as exc:  # noqa: BLE001 - the item's file cannot be read here
                            ctx.fail(item, exc, 0.0)
                            continue
                        ctx.mark_running(item)
                        inflight[actor.process.remote(item, payload)] = (item, actor)
                        load[actor] += 1
                if not inflight and not todo_q:
                    break
                if not inflight and not starting:  # work left and no worker: nothing more can happen
                    ctx.fail_run("no Ray worker left (all died; see job.log)")
                    break
                ready, _ = ray.wait([*starting, *inflight], num_returns=1, timeout=_POLL)
                for ref in ready:
                    if ref in starting:
                        actor = starting.pop(ref)
                        try:
                            outcome, pid, events = ray.get(ref)
                        except RayActorError as exc:
                            if replacements_left <= 0:
                                ctx.fail_run(f"Ray workers keep dying at start: {_first_line(exc)}")
                                return
                            replacements_left -= 1
                            start_worker()
                            continue
                        if outcome == "error":  # job.setup failed: the same on every worker
                            ctx.fail_run(f"setup on a Ray worker failed: {pid}")
                            return
                        self.worker_pids[actor] = pid
                        actors.append(actor)
                        load[actor] = 0
                        if first_setup:  # the model-loaded messages of one worker, not of every one
                            first_setup = False
                            for event in events:
                                ctx.emit(event)
                        continue
                    item, actor = inflight.pop(ref)
                    load[actor] = load.get(actor, 1) - 1
                    try:
                        outcome, result, seconds, events = ray.get(ref)
                    except RayActorError as exc:
                        if actor in actors:  # replace the dead worker once, for all its items
                            actors.remove(actor)
                            load.pop(actor, None)
                            self.worker_pids.pop(actor, None)
                            if replacements_left > 0:
                                replacements_left -= 1
                                start_worker()
                        attempts[item] = attempts.get(item, 0) + 1
                        if attempts[item] >= 2:
                            ctx.fail(item, WorkerDied(f"a Ray worker died while processing it, twice "
                                                      f"({_first_line(exc)})"), 0.0)
                        else:
                            ctx.emit(Message(text=f"a Ray worker died while processing {item}; retrying it "
                                                  "on another worker", level="warning"))
                            todo_q.appendleft(item)
                        continue
                    except RayError as exc:  # the result could not travel back (not picklable)
                        ctx.fail(item, RemoteItemError(f"the worker's result could not be returned: "
                                                       f"{_first_line(exc)}"), 0.0)
                        continue
                    for event in events:
                        ctx.emit(event)
                    if outcome == "error":  # the job's own error: one failed item
                        if seconds:
                            ctx.log("%s failed on a Ray worker:\n%s", item, seconds)
                        ctx.fail(item, RemoteItemError(result), 0.0)
                    elif not ctx.deliver(item, result, seconds):
                        break
        finally:
            for item, _actor in inflight.values():  # stopped: computed again by the next run
                ctx.mark_pending(item)
            for actor in everyone:  # actors hold CPUs/GPUs until killed
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001, S110 - already gone
                    pass
            self.worker_pids.clear()
            if started:
                ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = [line for line in str(exc).strip().splitlines() if line.strip()]
    return text[0][:200] if text else type(exc).__name__
