"""Read the scored parts in a second process while this one writes the outputs.

`iter_scored` verifies every part against the prepared frames (reads it, compares its ids, checks its sha256)
and aggregation also formats the parts' prediction_results.txt rows there (run.stream.with_prediction_rows): about
as much work per frame as the rest of the outputs, so in a forked reader the two overlap on two cores (what a SLURM
aggregation job gets by default). The pipe holds about one part, so memory stays bounded. The reader's errors are raised
here with their class and message, and its log records (e.g. a part found altered and deleted) are logged here,
once, through this process's handlers; if this process dies, the reader's next send fails and it exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
from typing import Callable, Iterator

from virnucpro.errors import VirNucProError
from virnucpro.run.parts import PartData

PartSource = Callable[[], Iterator[PartData]]


def prefetched(source: PartSource) -> Iterator[PartData]:
    """The parts `source()` yields, read in a forked process (in this process where fork is not available)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        yield from source()
        return
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    reader = context.Process(target=_read, args=(source, sender), name="virnucpro-parts", daemon=True)
    reader.start()
    sender.close()
    try:
        yield from _received(receiver)
    finally:
        receiver.close()
        reader.join(timeout=5)
        if reader.is_alive():
            reader.terminate()
            reader.join()


def _received(receiver) -> Iterator[PartData]:
    while True:
        try:
            kind, payload = receiver.recv()
        except EOFError:
            raise RuntimeError("the part reader process died") from None
        if kind == "end":
            return
        if kind == "part":
            yield payload
        elif kind == "log":
            logging.getLogger(payload.name).handle(payload)
        else:
            raise _rebuilt(kind, payload)


class _ForwardedLog(logging.Handler):
    """The reader's log records, sent to the consumer to be logged there (its handlers, its log file, once)."""

    def __init__(self, sender):
        super().__init__()
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args, record.exc_info, record.exc_text = record.getMessage(), None, None, None
        try:
            self.sender.send(("log", record))
        except (OSError, ValueError):
            pass  # the consumer is gone: nobody to tell


def _read(source: PartSource, sender) -> None:
    logging.getLogger().handlers = [_ForwardedLog(sender)]
    try:
        for part in source():
            sender.send(("part", part))
        sender.send(("end", None))
    except (BrokenPipeError, ConnectionResetError):
        return  # the consumer is gone
    except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
        sender.send(_portable(error))
    finally:
        sender.close()


def _portable(error: BaseException) -> tuple[str, object]:
    if isinstance(error, VirNucProError):
        return "virnucpro", (type(error), str(error))
    try:
        pickle.loads(pickle.dumps(error))
        return "error", error
    except Exception:  # noqa: BLE001 - an exception that does not survive pickling travels as text
        return "error", RuntimeError(f"{type(error).__name__}: {error}")


def _rebuilt(kind: str, payload) -> BaseException:
    if kind == "virnucpro":
        cls, message = payload
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        return error
    return payload
