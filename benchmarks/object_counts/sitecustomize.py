"""Python objects by type, counted every few seconds in each process that imports it.

`benchmarks/churn.py supervisor --count-objects` puts this folder on PYTHONPATH, so the
supervisor and each of its workers import it at start-up (the interpreter's `site`
hook) without a line of theirs changed: the question is whether the supervisor's own
Python objects grow with rooms served, in the very processes that serve them. A daemon
thread collects garbage, counts `gc.get_objects()` by type and appends a JSON line
(unix time, count by type) to `$LKSUP_OBJECT_COUNTS/<pid>.jsonl`.
"""

import gc
import json
import os
import threading
import time
from collections import Counter

_FOLDER = os.environ.get("LKSUP_OBJECT_COUNTS")
_EVERY_SECONDS = float(os.environ.get("LKSUP_OBJECT_COUNTS_EVERY", "10"))


def _count_forever(path: str) -> None:
    while True:
        time.sleep(_EVERY_SECONDS)
        gc.collect()
        counts = Counter(
            f"{type(found).__module__}.{type(found).__qualname__}" for found in gc.get_objects()
        )
        with open(path, "a") as out:
            out.write(json.dumps({"at": time.time(), "counts": counts}) + "\n")


if _FOLDER:
    threading.Thread(
        target=_count_forever,
        args=(os.path.join(_FOLDER, f"{os.getpid()}.jsonl"),),
        name="object-counts",
        daemon=True,
    ).start()
