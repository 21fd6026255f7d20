"""The daemon's status writer batches only consecutive calls of one attempt: a batch status's
key names its first and last call, so a batch that cannot be read fails exactly its own."""

from wrencore_runtime import layout
from wrencore_runtime.daemon import _consecutive_runs


def _outcome(call_id, attempt=0):
    return ("outcome", None, {"job_id": "j"}, {"call_id": call_id, "attempt": attempt}, None)


def _ids(runs):
    return [[(o[3]["call_id"], o[3]["attempt"]) for o in run] for run in runs]


def test_runs_split_at_gaps_and_attempts_and_keep_call_order():
    outcomes = [_outcome(c) for c in ("00012", "00003", "00004", "00010", "00011", "00005")]
    outcomes.append(_outcome("00006", attempt=1))
    assert _ids(_consecutive_runs(outcomes)) == [
        [("00003", 0), ("00004", 0), ("00005", 0)],
        [("00010", 0), ("00011", 0), ("00012", 0)],
        [("00006", 1)],
    ]


def test_every_call_a_run_names_is_in_it():
    outcomes = [_outcome(c) for c in ("00009", "00010", "00011", "00020")]
    for run in _consecutive_runs(outcomes):
        ids = [o[3]["call_id"] for o in run]
        key = layout.batch_status_key("j", ids[0], 0, ids[-1])
        covered = [f"{n:05d}" for n in range(0, 30) if layout.batch_status_covers(key, f"{n:05d}")]
        assert covered == ids
