"""The job runner: job folder, manifest, events, resume, per-item errors, cancel.

``run_job`` drives a :class:`~.base.Job` through its items in a three-stage
pipeline: a prefetch pool calls ``job.load`` ahead of time, the calling thread calls
``job.process`` in item order, and a writer thread calls ``job.write`` and records
the item in the manifest. Loading and writing therefore overlap with compute, and
only the compute stage holds the model.

Every stage is bounded (back-pressure): at most ``prefetch`` loaded items wait for
compute and at most ``write_queue`` computed results wait for the writer, so memory
stays flat however long the batch and whichever stage is slowest; a fast compute
stage simply waits for a slow disk.

Guarantees
----------
* An item is ``done`` in the manifest only after all of its files were renamed into
  place; a run killed at any moment leaves no half-written output (leftover temp
  files of a killed run are removed at the next start).
* A re-run with the same parameters skips ``done`` items.
* One failing item is recorded (one line in the manifest, ``events.jsonl`` and
  ``job.log``, with the traceback in ``job.log`` only) and the run goes on.
* ``cancel.set()`` stops within about a second after the item being computed (at
  once between sub-steps of a job that calls ``Job.step``): results already queued
  for the writer are written for up to ``drain_s`` seconds, the rest are left
  ``pending`` (never half-written) and the next run computes them again.
* Systemic faults end the run at the first occurrence instead of failing every
  remaining item: a full disk (``ENOSPC``, ``EDQUOT``) stops with one line
  ("disk full at ...: free space and re-run; done items are kept").
* A damaged ``manifest.sqlite`` (truncated, overwritten) is moved aside and rebuilt
  from the outputs on disk: an item counts as done only when ``events.jsonl`` (or
  ``Job.expected_outputs``) names its outputs and all of them are complete. One
  warning line says so. ``fresh=True`` (``segdeck run --fresh``) starts over.
* Two processes never run the same job folder at once (an ``flock`` on ``job.lock``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from segdeck.core.errors import ImageError, RunStop, SegdeckError, SetupError
from segdeck.core.jobs.base import JOB_TOML, ItemCancelled, Job, default_output_root
from segdeck.core.jobs.events import (
    ItemDone,
    ItemFailed,
    JobFinished,
    JobStarted,
    JsonlSink,
    Message,
    MultiSink,
    Sink,
    read_events,
)
from segdeck.core.jobs.executors import ComputeContext, RayExecutor, setup_on_driver
from segdeck.core.jobs.items import check_item_ids
from segdeck.core.jobs.manifest import MANIFEST_NAME, Manifest
from segdeck.core.jobs.registry import remember
from segdeck.core.params import JobParams, to_toml_dict

LOG_NAME = "job.log"
LOCK_NAME = "job.lock"

#: Exit codes of ``segdeck run``.
EXIT_OK, EXIT_ITEMS_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


class JobBusyError(SetupError):
    """Another process is running this job folder."""


@dataclass(frozen=True)
class JobSummary:
    """What a run did.

    Attributes
    ----------
    status : {"done", "failed", "cancelled", "error"}
    total : int
        Items in the input.
    done, failed : int
        Items processed by this run, and how they ended.
    skipped : int
        Items not processed because an earlier run did them (done).
    seconds : float
        Wall time of the run.
    error : str or None
        Why the run ended in ``error``.
    skipped_failed : int
        Items not retried because they failed in an earlier run (``retry_failed=False``).
    """

    job_dir: Path
    status: str
    total: int
    done: int
    failed: int
    skipped: int
    seconds: float
    error: str | None = None
    skipped_failed: int = 0

    @property
    def exit_code(self) -> int:
        return {
            "done": EXIT_OK,
            "failed": EXIT_ITEMS_FAILED,
            "cancelled": EXIT_CANCELLED,
        }.get(self.status, EXIT_USAGE)


def job_dir_for(job_cls: type[Job], params: JobParams, input_path: str | Path, out_root: str | Path | None) -> Path:
    """The run folder: ``<out_root or default_output_root(input)>/<job_cls.run_name(params)>``."""
    root = Path(out_root) if out_root else default_output_root(input_path)
    return root / job_cls.run_name(params)


def write_job_toml(job: Job) -> None:
    """Write ``job.toml`` (job name, segdeck version, input, params) once per folder.

    Raises
    ------
    SetupError
        If the folder already belongs to another input (same params and ``--out``):
        resuming there would skip this input's files that share a name with done ones.
    """
    import tomllib

    from segdeck import __version__
    from segdeck.core.imageio import write_text_atomic

    path = job.job_dir / JOB_TOML
    if path.exists():
        try:
            old_input = tomllib.loads(path.read_text(encoding="utf-8")).get("input")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            old_input = None
        if old_input and Path(old_input) != job.input_path.resolve():
            raise SetupError(
                f"{job.job_dir} holds a run of the same job on {old_input}, not {job.input_path.resolve()}; "
                "give this input its own --out folder"
            )
        return
    doc = {
        "job": job.name,
        "segdeck_version": __version__,
        "input": str(job.input_path.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": to_toml_dict(job.params),
    }
    write_text_atomic(path, tomli_w.dumps(doc))


def _remove_stale_temp_files(job_dir: Path) -> int:
    removed = 0
    for path in job_dir.rglob(".*.tmp*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, (ImageError, SegdeckError)):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _make_logger(job_dir: Path) -> logging.Logger:
    logger = logging.getLogger(f"segdeck.job.{job_dir}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.FileHandler(job_dir / LOG_NAME, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


#: How long a cancelled run keeps writing results it already computed before it
#: leaves the rest ``pending`` (seconds).
DRAIN_SECONDS = 2.0

#: How often the compute thread looks at the cancel event while it waits for a load
#: or for room in the write queue (seconds).
_POLL = 0.1

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def disk_full_error(exc: BaseException | None) -> BaseException | None:
    """The disk-full error in ``exc``'s chain (``OSError`` with ``ENOSPC``/``EDQUOT``,
    or SQLite's "database or disk is full"), or None when it is something else."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return exc
        if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _run_stop(exc: BaseException | None) -> BaseException | None:
    """The :class:`~segdeck.core.errors.RunStop` in ``exc``'s chain, or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RunStop):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_line(exc: BaseException, job_dir: Path) -> str:
    """The one line a disk-full error ends a run with: where, and what to do."""
    where: Path = job_dir
    filename = getattr(exc, "filename", None)
    if filename:
        where = Path(os.fsdecode(filename))
        if where.name.startswith(".") and ".tmp" in where.name:  # an atomic writer's temp file
            where = where.parent
    return f"disk full at {where}: free space and re-run; done items are kept"


# ------------------------------------------------------------------ damaged manifest


def output_complete(path: Path) -> bool:
    """Whether an output file is complete: a regular file and, for PNG, JPEG and JSON,
    one whose end is where the format ends (``IEND`` chunk, ``FFD9`` marker, closing
    bracket). Outputs are renamed into place only when written (atomic writes), so
    this catches files cut short by whatever damaged the job folder."""
    try:
        if not path.is_file():
            return False
        suffix = path.suffix.lower()
        if suffix not in (".png", ".jpg", ".jpeg", ".json"):
            return True
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64))
            tail = fh.read()
    except OSError:
        return False
    if suffix == ".png":
        return tail.endswith(b"IEND\xaeB`\x82")
    if suffix == ".json":
        return tail.rstrip().endswith((b"}", b"]"))
    return tail.endswith(b"\xff\xd9")


def _open_manifest(job_dir: Path, fresh: bool) -> tuple[Manifest, str | None]:
    """Open the job folder's manifest; a damaged one is moved aside (``*.damaged``) and
    replaced by an empty one. Returns the manifest and why it was replaced (or None)."""
    path = job_dir / MANIFEST_NAME
    companions = [path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal")]
    if fresh:
        for p in (path, *companions):
            p.unlink(missing_ok=True)
        return Manifest(job_dir), None
    try:
        manifest = Manifest(job_dir)
    except sqlite3.DatabaseError as exc:
        reason = str(exc) or type(exc).__name__
    else:
        try:
            manifest.check()
            return manifest, None
        except sqlite3.DatabaseError as exc:
            reason = str(exc) or type(exc).__name__
            try:
                manifest.close()
            except sqlite3.Error:
                pass
    damaged = path.with_name(path.name + ".damaged")
    os.replace(path, damaged)
    for p in companions:
        if p.exists():
            os.replace(p, p.with_name(damaged.name + p.name[len(path.name):]))
    return Manifest(job_dir), reason


def _rebuild_manifest(job: Job, items: list[str], manifest: Manifest) -> int:
    """Mark ``done`` the items whose outputs are all complete on disk; returns how many.

    An item's outputs come from its last ``ItemDone``/``ItemFailed`` in ``events.jsonl``
    (a last failure means not done), else from ``job.expected_outputs``; an item whose
    outputs nobody can name is left pending (it is computed again).
    """
    last: dict[str, list[str] | None] = {}
    try:
        events, _ = read_events(job.job_dir)
    except OSError:
        events = []
    for event in events:
        if isinstance(event, ItemDone):
            last[event.item] = list(event.outputs)
        elif isinstance(event, ItemFailed):
            last[event.item] = None
    done = 0
    for item in items:
        key = str.__str__(item)
        outputs = last[key] if key in last else job.expected_outputs(item)
        if outputs is None:
            continue
        if all(output_complete(job.job_dir / o) for o in outputs):
            manifest.mark_done(key, None, outputs)
            done += 1
    manifest.flush()
    return done


def run_job(
    job: Job,
    *,
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
    prefetch: int = 2,
    retry_failed: bool = True,
    write_queue: int = 4,
    fresh: bool = False,
    drain_s: float = DRAIN_SECONDS,
    executor: RayExecutor | None = None,
) -> JobSummary:
    """Run a job to the end (or until cancelled) in its job folder.

    Parameters
    ----------
    job : Job
        A constructed job; ``job.job_dir`` is created if needed.
    sink : callable, optional
        Receives every event (also written to ``events.jsonl``).
    cancel : threading.Event, optional
        Set it to stop after the current item (or its current sub-step).
    prefetch : int
        How many items ``job.load`` may run ahead of compute (threads), >= 1.
    retry_failed : bool
        Re-process items that failed in an earlier run (default) or skip them.
    write_queue : int
        How many computed results may wait for the writer, >= 1; compute waits when
        the queue is full (bounded memory).
    fresh : bool
        Start over: forget the manifest (every item is processed again; outputs are
        overwritten as they are redone).
    drain_s : float
        After a cancel, results already computed are written for at most this many
        seconds; the others stay ``pending``.
    executor : RayExecutor, optional
        Where items are computed (:mod:`.executors`). None: in this process (the
        prefetch/compute/write pipeline above). The manifest, the events and all
        writes stay with this process either way.

    Returns
    -------
    JobSummary
        ``status="error"`` with a one-line ``error`` when the job could not run, its
        items could not be listed, or the disk filled up.

    Raises
    ------
    JobBusyError
        If another process holds this job folder.
    """
    cancel = cancel or threading.Event()
    job.cancel = cancel
    job.job_dir.mkdir(parents=True, exist_ok=True)
    lock_fh = open(job.job_dir / LOCK_NAME, "w")
    try:
        fcntl.flock(lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_fh.close()
        raise JobBusyError(f"{job.job_dir} is being processed by another segdeck process") from None
    jsonl = JsonlSink(job.job_dir)
    logger = _make_logger(job.job_dir)
    emit = MultiSink([jsonl, *([sink] if sink else []), _log_sink(logger)])
    manifest: Manifest | None = None
    db_lock = threading.Lock()
    t0 = time.time()
    done = failed = skipped = skipped_failed = total = 0

    def end_with_error(line: str, started: bool) -> JobSummary:
        seconds = time.time() - t0
        if not started:
            emit(JobStarted(job=job.name, total=total, todo=0, pid=os.getpid()))
        emit(JobFinished(status="error", done=0, failed=0, skipped=skipped, seconds=seconds, error=line,
                         skipped_failed=skipped_failed))
        return JobSummary(job.job_dir, "error", total, 0, 0, skipped, seconds, line, skipped_failed)

    try:
        write_job_toml(job)  # first: a folder of another input is refused before anything is touched
        manifest, damage = _open_manifest(job.job_dir, fresh)
        remember(job.job_dir)  # listed by `segdeck jobs` and the TUI wherever --out put it
        _remove_stale_temp_files(job.job_dir)
        try:
            items = job.list_items()
            check_item_ids(items)
        except (ValueError, SegdeckError) as exc:  # a bad input file: the job's own words
            return end_with_error(str(exc), started=False)
        except Exception as exc:  # noqa: BLE001 - one line here, the traceback in job.log
            logger.error("listing the items failed:\n%s", "".join(traceback.format_exception(exc)))
            return end_with_error(f"cannot list the items of {job.input_path}: {_one_line(exc)}", started=False)
        total = len(items)
        keys = [str.__str__(i) for i in items]
        with db_lock:
            manifest.add_items(keys)
            manifest.retain(keys)
            manifest.reset_running()
            recovered = _rebuild_manifest(job, items, manifest) if damage else 0
            finished = manifest.done_items()
            failed_before = set() if retry_failed else {r.item for r in manifest.records() if r.state == "failed"}
        todo = [i for i in items if i not in finished and i not in failed_before]
        skipped_failed = len(failed_before)
        skipped = total - len(todo) - skipped_failed
        emit(JobStarted(job=job.name, total=total, todo=len(todo), pid=os.getpid()))
        if damage:
            emit(Message(
                text=f"{MANIFEST_NAME} was damaged ({damage}); kept as {MANIFEST_NAME}.damaged and rebuilt "
                     f"from the outputs on disk: {recovered} of {total} items done (all outputs complete), "
                     "the others will be processed (--fresh starts over)",
                level="warning"))
        elif fresh:
            emit(Message(text=f"starting over (--fresh): all {total} items will be processed"))
        if (skipped or skipped_failed) and not damage:
            extra = f", {skipped_failed} failed before (not retried)" if skipped_failed else ""
            emit(Message(text=f"resuming: {skipped} of {total} items already done{extra}"))
        try:
            if todo and (executor is None or setup_on_driver(job)):
                job.setup(emit)
        except ItemCancelled:  # a long setup (training) saw the cancel through Job.step
            seconds = time.time() - t0
            emit(JobFinished(status="cancelled", done=0, failed=0, skipped=skipped, seconds=seconds,
                             skipped_failed=skipped_failed))
            return JobSummary(job.job_dir, "cancelled", total, 0, 0, skipped, seconds, None, skipped_failed)
        except Exception as exc:  # noqa: BLE001 - recorded as the job's error, shown by `segdeck jobs`
            if not isinstance(exc, SegdeckError):
                logger.error("setup failed:\n%s", "".join(traceback.format_exception(exc)))
            full = disk_full_error(exc)
            line = (disk_full_line(full, job.job_dir) if full else
                    str(exc) if isinstance(exc, SegdeckError) else _one_line(exc))
            return end_with_error(line, started=True)

        counts = {"done": 0, "failed": 0}
        counts_lock = threading.Lock()
        fatal: list[str] = []  # a systemic fault (disk full, RunStop): the run stops at the first one
        # disk full / recording failed: results still queued are left pending, not written
        # (after a RunStop they are written: the job can still save what it computed)
        writes_stopped = threading.Event()
        left_pending: list[str] = []  # computed but not written when the run stopped

        def stop_for(exc: BaseException) -> bool:
            """Record a systemic fault; True when ``exc`` is one."""
            full = disk_full_error(exc)
            stop = _run_stop(exc) if full is None else None
            if full is None and stop is None:
                return False
            if full is not None:
                writes_stopped.set()
            if not fatal:
                fatal.append(disk_full_line(full, job.job_dir) if full is not None else str(stop))
                logger.error("stopping: %s", fatal[0])
            return True

        def stopping() -> bool:
            return cancel.is_set() or bool(fatal)

        def record_failure(item: str, exc: BaseException, seconds: float) -> None:
            line = _one_line(exc)
            if not isinstance(exc, SegdeckError):
                logger.error("%s failed:\n%s", item, "".join(traceback.format_exception(exc)))
            with db_lock:
                manifest.mark_failed(item, seconds, line)
            with counts_lock:
                counts["failed"] += 1
            emit(ItemFailed(item=item, error=line))

        def write_stage(item: str, result, seconds: float) -> None:
            try:
                outputs = job.write(item, result)
            except Exception as exc:  # noqa: BLE001 - recorded per item, run goes on
                if stop_for(exc):
                    left_pending.append(item)
                    return
                record_failure(item, exc, seconds)
                return
            with db_lock:
                manifest.mark_done(item, seconds, outputs)
            with counts_lock:
                counts["done"] += 1
            emit(ItemDone(item=item, seconds=seconds, outputs=outputs))

        results: queue.Queue = queue.Queue(maxsize=max(1, write_queue))

        def writer_loop() -> None:
            drain_until = None
            while True:
                entry = results.get()
                if entry is None:
                    return
                item = entry[0]
                if cancel.is_set() and drain_until is None:
                    drain_until = time.monotonic() + drain_s
                if writes_stopped.is_set() or (drain_until is not None and time.monotonic() > drain_until):
                    left_pending.append(item)
                    continue
                try:
                    write_stage(*entry)
                except Exception as exc:  # noqa: BLE001 - the manifest or events file failed
                    if not stop_for(exc):
                        logger.error("recording %s failed:\n%s", item, traceback.format_exc())
                        fatal.append(f"recording the results failed: {_one_line(exc)}")
                        writes_stopped.set()
                    left_pending.append(item)

        def load_stage(item: str):
            t = time.perf_counter()
            return job.load(item), time.perf_counter() - t

        def deliver(item: str, result, seconds: float) -> bool:
            while True:  # back-pressure: wait for room in the write queue
                try:
                    results.put((item, result, seconds), timeout=_POLL)
                    return True
                except queue.Full:
                    if stopping():
                        left_pending.append(item)
                        return False

        def fail_remote(item: str, exc: BaseException, seconds: float) -> None:
            if stop_for(exc):
                left_pending.append(item)
            else:
                record_failure(item, exc, seconds)

        def mark(state: str):
            def set_state(item: str) -> None:
                with db_lock:
                    getattr(manifest, f"mark_{state}")(item)
            return set_state

        cancelled = False
        writer = threading.Thread(target=writer_loop, name="write", daemon=True)
        writer.start()
        loader = ThreadPoolExecutor(max(1, prefetch), thread_name_prefix="load")
        pending: deque[tuple[str, Future]] = deque()
        queue_iter = iter(todo)

        def refill() -> None:
            while len(pending) < max(1, prefetch) and not stopping():
                nxt = next(queue_iter, None)
                if nxt is None:
                    return
                pending.append((nxt, loader.submit(load_stage, nxt)))

        try:
            if executor is not None:  # items computed elsewhere; `pending` stays empty
                try:
                    executor.compute(job, todo, ComputeContext(
                        emit=emit, stopping=stopping, mark_running=mark("running"), mark_pending=mark("pending"),
                        deliver=deliver, fail=fail_remote, fail_run=lambda line: fatal or fatal.append(line),
                        log=logger.error))
                except SetupError as exc:  # Ray missing or unreachable: one line
                    fatal.append(str(exc))
            else:
                refill()
            while pending and not stopping():
                item, fut = pending.popleft()
                while not stopping():  # wait for the load, watching for a cancel
                    try:
                        data, load_s = fut.result(timeout=_POLL)
                        break
                    except FutureTimeout:
                        continue
                    except Exception as exc:  # noqa: BLE001 - the item's load failed
                        data = exc
                        break
                else:
                    break
                refill()
                if isinstance(data, BaseException):
                    if not stop_for(data):
                        record_failure(item, data, 0.0)
                    continue
                with db_lock:
                    manifest.mark_running(item)
                job._step_target, job._step_last = (item, emit), 0.0
                try:
                    t = time.perf_counter()
                    result = job.process(item, data)
                    seconds = load_s + time.perf_counter() - t
                except ItemCancelled:
                    with db_lock:
                        manifest.mark_pending(item)
                    cancelled = True
                    break
                except Exception as exc:  # noqa: BLE001 - recorded per item, run goes on
                    if stop_for(exc):
                        left_pending.append(item)
                        break
                    record_failure(item, exc, 0.0)
                    continue
                finally:
                    job._step_target = None
                    data = None  # the loaded input is not kept while waiting for the writer
                deliver(item, result, seconds)
                result = None
        finally:
            for _item, fut in pending:
                fut.cancel()
            while writer.is_alive():  # the writer always takes entries (it drops them when stopping)
                try:
                    results.put(None, timeout=_POLL)
                    break
                except queue.Full:
                    continue
            writer.join()
            loader.shutdown(wait=True, cancel_futures=True)
        if cancel.is_set():
            cancelled = True
        with db_lock:
            for item in left_pending:
                manifest.mark_pending(item)
            try:
                manifest.flush()  # finalize may read the manifest through its own connection
            except sqlite3.Error as exc:
                if not stop_for(exc):
                    raise
        done, failed = counts["done"], counts["failed"]
        if fatal:
            seconds = time.time() - t0
            _emit_quietly(emit, logger, JobFinished(status="error", done=done, failed=failed, skipped=skipped,
                                                    seconds=seconds, error=fatal[0], skipped_failed=skipped_failed))
            return JobSummary(job.job_dir, "error", total, done, failed, skipped, seconds, fatal[0], skipped_failed)
        finalize_error = None
        if cancelled and done + skipped and type(job).finalize is not Job.finalize:
            emit(Message(text=f"cancelled: writing the per-job outputs of the {done + skipped} done items "
                              "(Ctrl+C again to skip them; a re-run writes them)"))
        try:
            job.finalize(emit)
        except ItemCancelled:  # a finalize that checks the cancel (Job.step) stops on a cancelled run
            cancelled = True
        except KeyboardInterrupt:  # the second Ctrl+C of `segdeck run` while the per-job outputs are written
            if not cancelled:
                raise
            emit(Message(text="per-job outputs skipped (a re-run writes them)", level="warning"))
        except Exception as exc:  # noqa: BLE001
            logger.error("finalize failed:\n%s", traceback.format_exc())
            full = disk_full_error(exc)
            finalize_error = (disk_full_line(full, job.job_dir) if full
                              else f"writing the per-job outputs failed: {_one_line(exc)}")
            emit(Message(text=finalize_error, level="error"))
        with db_lock:  # only items still in the input count: a bad file the user deleted is no failure
            still_failed = {r.item for r in manifest.records() if r.state == "failed"} & set(keys)
        status = "cancelled" if cancelled else ("error" if finalize_error else ("failed" if still_failed else "done"))
        seconds = time.time() - t0
        _emit_quietly(emit, logger, JobFinished(status=status, done=done, failed=failed, skipped=skipped,
                                                seconds=seconds, error=finalize_error, skipped_failed=skipped_failed))
        return JobSummary(job.job_dir, status, total, done, failed, skipped, seconds, finalize_error, skipped_failed)
    finally:
        try:
            job.teardown()
        finally:
            try:
                if manifest is not None:
                    manifest.close()
            except sqlite3.Error as exc:  # a full disk at the last commit: the next run redoes those items
                logger.error("closing the manifest failed: %s", exc)
            finally:
                jsonl.close()
                for h in list(logger.handlers):
                    h.close()
                    logger.removeHandler(h)
                fcntl.flock(lock_fh, fcntl.LOCK_UN)
                lock_fh.close()


def _emit_quietly(emit: Sink, logger: logging.Logger, event) -> None:
    """Send the last event of a run; a full disk must not turn the summary into a traceback."""
    try:
        emit(event)
    except OSError as exc:
        logger.error("could not record %s: %s", event.kind, exc)


#: job.log levels of the reporter's line levels (segdeck.core.jobs.report.LEVELS).
_LOG_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR}


def _log_sink(logger: logging.Logger) -> Sink:
    """``job.log``: every event as :func:`~.report.event_line` words it, except the
    sub-steps inside items (``ItemProgress``, ``Progress``: the bar and the TUI show those)."""
    from segdeck.core.jobs.events import ItemProgress, Progress
    from segdeck.core.jobs.report import event_line

    def sink(event) -> None:
        if isinstance(event, (ItemProgress, Progress)):
            return
        line = event_line(event)
        if line is not None:
            logger.log(_LOG_LEVELS.get(line.level, logging.INFO), "%s", line.text)

    return sink
