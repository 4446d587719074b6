"""The job runner: job folder, manifest, events, resume, per-item errors, cancel.

``run_job`` drives a :class:`~.base.Job` through its items in a three-stage
pipeline: a prefetch pool calls ``job.load`` ahead of time, the calling thread calls
``job.process`` in item order, and a writer thread calls ``job.write`` and records
the item in the manifest. Loading and writing therefore overlap with compute, and
only the compute stage holds the model.

Guarantees
----------
* An item is ``done`` in the manifest only after all of its files were renamed into
  place; a run killed at any moment leaves no half-written output (leftover temp
  files of a killed run are removed at the next start).
* A re-run with the same parameters skips ``done`` items.
* One failing item is recorded (one line in the manifest, ``events.jsonl`` and
  ``job.log``, with the traceback in ``job.log`` only) and the run goes on.
* ``cancel.set()`` stops after the item being computed; its write completes.
* Two processes never run the same job folder at once (an ``flock`` on ``job.lock``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from segdeck.core.errors import ImageError, SegdeckError, SetupError
from segdeck.core.jobs.base import JOB_TOML, Job, default_output_root
from segdeck.core.jobs.events import (
    ItemDone,
    ItemFailed,
    JobFinished,
    JobStarted,
    JsonlSink,
    Message,
    MultiSink,
    Sink,
)
from segdeck.core.jobs.manifest import Manifest
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


def run_job(
    job: Job,
    *,
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
    prefetch: int = 2,
    retry_failed: bool = True,
) -> JobSummary:
    """Run a job to the end (or until cancelled) in its job folder.

    Parameters
    ----------
    job : Job
        A constructed job; ``job.job_dir`` is created if needed.
    sink : callable, optional
        Receives every event (also written to ``events.jsonl``).
    cancel : threading.Event, optional
        Set it to stop after the current item.
    prefetch : int
        How many items ``job.load`` may run ahead of compute (threads), >= 1.
    retry_failed : bool
        Re-process items that failed in an earlier run (default) or skip them.

    Returns
    -------
    JobSummary

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
    manifest = Manifest(job.job_dir)
    db_lock = threading.Lock()
    t0 = time.time()
    done = failed = skipped = skipped_failed = total = 0
    try:
        write_job_toml(job)
        remember(job.job_dir)  # listed by `segdeck jobs` and the TUI wherever --out put it
        _remove_stale_temp_files(job.job_dir)
        items = job.list_items()
        total = len(items)
        with db_lock:
            manifest.add_items(items)
            manifest.retain(items)
            manifest.reset_running()
            finished = manifest.done_items()
            failed_before = set() if retry_failed else {r.item for r in manifest.records() if r.state == "failed"}
        todo = [i for i in items if i not in finished and i not in failed_before]
        skipped_failed = len(failed_before)
        skipped = total - len(todo) - skipped_failed
        emit(JobStarted(job=job.name, total=total, todo=len(todo), pid=os.getpid()))
        if skipped or skipped_failed:
            extra = f", {skipped_failed} failed before (not retried)" if skipped_failed else ""
            emit(Message(text=f"resuming: {skipped} of {total} items already done{extra}"))
        try:
            if todo:
                job.setup(emit)
        except Exception as exc:  # noqa: BLE001 - recorded as the job's error, shown by `segdeck jobs`
            if not isinstance(exc, SegdeckError):
                logger.error("setup failed:\n%s", "".join(traceback.format_exception(exc)))
            line = str(exc) if isinstance(exc, SegdeckError) else _one_line(exc)
            seconds = time.time() - t0
            emit(JobFinished(status="error", done=0, failed=0, skipped=skipped, seconds=seconds, error=line,
                             skipped_failed=skipped_failed))
            return JobSummary(job.job_dir, "error", total, 0, 0, skipped, seconds, line, skipped_failed)

        counts = {"done": 0, "failed": 0}
        counts_lock = threading.Lock()

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
                record_failure(item, exc, seconds)
                return
            with db_lock:
                manifest.mark_done(item, seconds, outputs)
            with counts_lock:
                counts["done"] += 1
            emit(ItemDone(item=item, seconds=seconds, outputs=outputs))

        def load_stage(item: str):
            t = time.perf_counter()
            return job.load(item), time.perf_counter() - t

        cancelled = False
        with ThreadPoolExecutor(max(1, prefetch), thread_name_prefix="load") as loader, ThreadPoolExecutor(
            1, thread_name_prefix="write"
        ) as writer:
            pending: deque[tuple[str, Future]] = deque()
            queue = iter(todo)
            writes: list[Future] = []

            def refill() -> None:
                while len(pending) < max(1, prefetch) and not cancel.is_set():
                    nxt = next(queue, None)
                    if nxt is None:
                        return
                    pending.append((nxt, loader.submit(load_stage, nxt)))

            refill()
            while pending:
                if cancel.is_set():
                    cancelled = True
                    break
                item, fut = pending.popleft()
                with db_lock:
                    manifest.mark_running(item)
                try:
                    data, load_s = fut.result()
                    refill()
                    t = time.perf_counter()
                    result = job.process(item, data)
                    seconds = load_s + time.perf_counter() - t
                except Exception as exc:  # noqa: BLE001 - recorded per item, run goes on
                    refill()
                    record_failure(item, exc, 0.0)
                    continue
                writes.append(writer.submit(write_stage, item, result, seconds))
            for _item, fut in pending:
                fut.cancel()
            for w in writes:
                w.result()
        if cancel.is_set():
            cancelled = True
        with db_lock:
            manifest.flush()  # finalize may read the manifest through its own connection
        done, failed = counts["done"], counts["failed"]
        finalize_error = None
        try:
            job.finalize(emit)
        except Exception as exc:  # noqa: BLE001
            logger.error("finalize failed:\n%s", traceback.format_exc())
            finalize_error = f"writing the per-job outputs failed: {_one_line(exc)}"
            emit(Message(text=finalize_error, level="error"))
        with db_lock:  # only items still in the input count: a bad file the user deleted is no failure
            still_failed = {r.item for r in manifest.records() if r.state == "failed"} & set(items)
        status = "cancelled" if cancelled else ("error" if finalize_error else ("failed" if still_failed else "done"))
        seconds = time.time() - t0
        emit(JobFinished(status=status, done=done, failed=failed, skipped=skipped, seconds=seconds,
                         error=finalize_error, skipped_failed=skipped_failed))
        return JobSummary(job.job_dir, status, total, done, failed, skipped, seconds, finalize_error, skipped_failed)
    finally:
        try:
            job.teardown()
        finally:
            manifest.close()
            jsonl.close()
            for h in list(logger.handlers):
                h.close()
                logger.removeHandler(h)
            fcntl.flock(lock_fh, fcntl.LOCK_UN)
            lock_fh.close()


def _log_sink(logger: logging.Logger) -> Sink:
    def sink(event) -> None:
        if isinstance(event, ItemFailed):
            logger.warning("failed %s", event.error)
        elif isinstance(event, ItemDone):
            logger.info("done %s in %.2f s", event.item, event.seconds)
        elif isinstance(event, Message):
            logger.log(logging.getLevelName(event.level.upper()) if event.level != "info" else logging.INFO, event.text)
        elif isinstance(event, JobStarted):
            logger.info("started %s: %d items, %d to do (pid %d)", event.job, event.total, event.todo, event.pid)
        elif isinstance(event, JobFinished):
            logger.info(
                "finished: %s, %d done, %d failed, %d already done, %d failed before (not retried), %.1f s%s",
                event.status, event.done, event.failed, event.skipped, event.skipped_failed, event.seconds,
                f" ({event.error})" if event.error else "",
            )

    return sink
