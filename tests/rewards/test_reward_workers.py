"""``task.rewards[i].timeout``: a reward of your own in worker processes, so that one that hangs or crashes on a
completion costs that completion its reward, not the run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from grpo_ext.rewards import build_rewards, reward_columns
from grpo_ext.rewards import workers as reward_workers
from grpo_ext.rewards.guard import RewardFailureError, guard
from grpo_ext.rewards.workers import WorkerStartError, _start_process, call_one
from grpo_ext.run.records import read_metrics
from grpo_ext.train import train
from support import FAST, compose_config


def in_workers(name: str, timeout: float = 2.0, workers: int = 2):
    rewards, _ = build_rewards([{"name": name, "timeout": timeout, "workers": workers}])
    return rewards[0]


def forkservers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]


def spawned_children() -> list[psutil.Process]:
    """Worker processes still alive: the forkserver's children (not the forkserver itself, nor multiprocessing's
    resource tracker, which live as long as the process)."""
    return [child for server in forkservers() for child in server.children()]


def test_a_hanging_completion_times_out_alone_and_the_workers_go_on():
    before = spawned_children()
    reward = in_workers("reward_fixtures.hangs", timeout=2.0)
    try:
        started = time.monotonic()
        values, errors = reward.score_each(["ok", "hang here", "fine"], {"answer": ["1", "2", "3"]})
        assert values == [1.0, None, 1.0]
        assert errors == [(1, "timed out after 2.0 s (task.rewards timeout); worker replaced")]
        assert time.monotonic() - started < 30  # not the hour the reward sleeps
        assert reward(["again"]) == [1.0]  # a new worker took the hung one's place
    finally:
        reward.close()
    assert spawned_children() == before


def test_a_crash_an_exception_and_a_bad_value_are_failures_of_their_completion():
    crashes = in_workers("reward_fixtures.crashes")
    try:
        assert crashes.score_each(["a", "crash"], {}) == (
            [1.0, None], [(1, "its worker process died (a crash, or out of memory); worker replaced")]
        )  # fmt: skip
    finally:
        crashes.close()
    raises = in_workers("reward_fixtures.raises")
    try:
        values, errors = raises.score_each(["a"], {})
        assert values == [None] and "RuntimeError: reward bug" in errors[0][1] and "Traceback" in errors[0][1]
    finally:
        raises.close()
    strings = in_workers("reward_fixtures.returns_strings")
    try:
        assert strings.score_each(["a"], {})[1] == [
            (0, "ValueError: returned str '1.0': a reward returns numbers, or None where it does not apply")
        ]
    finally:
        strings.close()


def dead(pids: list[int]) -> bool:
    """Whether each process has exited (a zombie counts: its parent has not reaped it yet)."""
    return all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in pids)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_worker_killed_between_jobs_is_replaced_and_its_next_job_scored(caplog):
    """The out-of-memory killer may take a worker while it waits for work: the next batch must not fail on the dead
    pipe (it did: BrokenPipeError out of the reward, which stopped the run)."""
    before = spawned_children()
    reward = in_workers("reward_fixtures.prefers_short", workers=2)
    try:
        assert reward(["a", "ab"]) == [-0.1, -0.2]
        victim = reward.pool.workers[0].process.pid
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: dead([victim]))
        assert reward.score_each(["abc", "a", "ab"], {}) == ([-0.3, -0.1, -0.2], [])
        assert victim not in [w.process.pid for w in reward.pool.workers]
        assert (
            "a worker process of reward reward_fixtures.prefers_short had died between jobs (exit code -9: "
            "killed, out of memory?); replaced" in caplog.text
        )
    finally:
        reward.close()
    assert spawned_children() == before


def test_workers_that_keep_dying_between_jobs_stop_the_batch_with_the_cause(monkeypatch):
    """Every new worker killed as soon as it is ready (as an out-of-memory killer under memory pressure would): after
    one replacement, the batch stops with the cause rather than starting workers for ever."""
    before = spawned_children()
    reward = in_workers("reward_fixtures.prefers_short", workers=1)

    def killed_when_ready():
        worker = start()
        worker.process.kill()
        worker.process.join()
        return worker

    try:
        assert reward(["a"]) == [-0.1]
        start = reward.pool._start
        monkeypatch.setattr(reward.pool, "_start", killed_when_ready)
        reward.pool.workers[0].process.kill()
        reward.pool.workers[0].process.join()
        with pytest.raises(WorkerStartError) as err:
            reward.score_each(["ab"], {})
        assert str(err.value) == (
            "the worker processes for reward 'reward_fixtures.prefers_short' keep dying: the one started to replace a "
            "dead one was dead too before its first job (exit code -9: killed, out of memory?)"
        )
        assert reward.pool.workers == []  # stopped mid-batch: closed, nothing left running
    finally:
        reward.close()
    assert spawned_children() == before


def test_a_worker_killed_before_reading_its_job_is_a_crash_of_that_completion_only():
    """A worker that dies with its job unread (the job sent, then the out-of-memory killer) resets the connection:
    ConnectionResetError, not EOFError, came out of the reward and stopped the run."""
    before = spawned_children()
    reward = in_workers("reward_fixtures.prefers_short", workers=1)
    try:
        assert reward(["a"]) == [-0.1]
        victim = reward.pool.workers[0].process.pid
        os.kill(victim, signal.SIGSTOP)  # it cannot read the job it is sent
        threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()
        values, failures = reward.score_each(["ab", "abc"], {})
        assert values == [None, -0.3] and [index for index, _ in failures] == [0]
        assert "its worker process died" in failures[0][1] and victim not in [
            w.process.pid for w in reward.pool.workers
        ]
    finally:
        reward.close()
    assert spawned_children() == before


def test_a_killed_forkserver_is_started_again_for_the_next_batch():
    """Its workers die with it (they are its children): the next batch starts a new forkserver and new workers."""
    reward = in_workers("reward_fixtures.prefers_short", workers=2)
    try:
        assert reward(["a", "ab"]) == [-0.1, -0.2]
        workers = [w.process.pid for w in reward.pool.workers]
        (server,) = forkservers()
        server.kill()
        wait_until(lambda: dead(workers))
        assert reward.score_each(["abc", "a", "ab"], {}) == ([-0.3, -0.1, -0.2], [])
        (new_server,) = forkservers()
        assert new_server.pid != server.pid
        assert {psutil.Process(w.process.pid).ppid() for w in reward.pool.workers} == {new_server.pid}
    finally:
        reward.close()


class RefusingContext:
    """A multiprocessing context whose forkserver refuses the first ``refusals`` starts, as one that has just died
    and is not yet seen dead does."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.attempts = refusals, 0

    def Process(self, **kwargs):  # noqa: N802 - multiprocessing's name
        context = self

        class Started:
            def start(self) -> None:
                context.attempts += 1
                if context.attempts <= context.refusals:
                    raise ConnectionRefusedError(111, "Connection refused")

        return Started()


def test_a_forkserver_not_yet_seen_dead_is_asked_again_until_a_deadline(monkeypatch):
    assert _start_process(RefusingContext(3), None, "r", {}, call_one) is not None
    monkeypatch.setattr(reward_workers, "REAPED_S", 0.2)
    with pytest.raises(
        WorkerStartError, match="the forkserver that starts them is gone and no new one started within"
    ):
        _start_process(RefusingContext(10**6), None, "r", {}, call_one)


def test_a_reward_that_cannot_be_built_in_a_worker_stops_with_the_reason():
    reward = guard(in_workers("reward_fixtures.OnlyInTheMainProcess"), max_failure_rate=0.1)
    try:
        with pytest.raises(RewardFailureError) as err:
            reward(["a"])
        assert "a worker process for reward 'reward_fixtures.OnlyInTheMainProcess' could not build it:" in str(
            err.value
        )
        assert "ImportError: no module named 'my_private_helpers'" in str(err.value)
    finally:
        reward.close()


FRESH_TRAINER = """
from grpo_ext.rewards.guard import RewardFailureError
from grpo_ext.rewards import build_rewards

if __name__ == "__main__":  # each worker runs this script again, as multiprocessing does
    name = "fails_in_a_fresh_process.score"
    (reward,), _ = build_rewards([{"name": name, "timeout": 5, "workers": 1}])
    try:
        print(name, reward(["ab"]), flush=True)
    except RewardFailureError as err:
        print(name, "stopped:", err, flush=True)
    finally:
        reward.close()
"""


def test_a_reward_module_that_fails_in_a_fresh_process_stops_with_the_reason(tmp_path):
    """The forkserver imports the reward's module before it forks; when that import fails (not for a missing module,
    which it skips), the forkserver dies, and the run stops naming it, not with multiprocessing's EOFError. (In a
    process of its own: the forkserver starts once per process, with the first reward's module.)"""
    script = tmp_path / "trainer.py"
    script.write_text(FRESH_TRAINER)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = result.stdout.splitlines()
    assert line.startswith("fails_in_a_fresh_process.score stopped: a worker process for reward")
    assert "could not start (EOFError: unexpected EOF): the forkserver that starts them failed" in line
    assert "RuntimeError: this module needs the trainer's environment" in result.stderr


def test_a_job_s_deadline_starts_once_its_worker_is_ready():
    """Under spawn a worker takes a second or more to import and build the reward: that is not the reward's time."""
    reward = in_workers("reward_fixtures.SlowToBuild", timeout=0.5, workers=2)
    try:
        assert reward.score_each(["a", "b", "c"], {}) == ([1.0, 1.0, 1.0], [])
    finally:
        reward.close()


def test_the_guard_counts_timeouts_as_failures_and_stops_past_the_limit():
    reward = guard(in_workers("reward_fixtures.hangs", timeout=1.0, workers=3), max_failure_rate=0.5)
    try:
        assert reward(["a", "hang", "b"]) == [1.0, None, 1.0] and reward.failures == 1
        with pytest.raises(RewardFailureError, match=r"failed on 2 of 3 completions(.|\n)*timed out after 1.0 s"):
            reward(["hang 1", "b", "hang 2"])
    finally:
        reward.close()


def test_workers_are_forked_from_a_server_that_has_the_reward_s_module_loaded():
    """A replaced worker must not import torch and TRL again (seconds under spawn): it is forked from a process that
    holds them, and the reward's module, already."""
    reward = in_workers("reward_fixtures.imported_elsewhere", timeout=1.0, workers=1)
    try:
        assert reward(["a"]) == [1.0]
        (worker,) = reward.pool.workers
        (server,) = forkservers()
        assert psutil.Process(worker.process.pid).ppid() == server.pid
    finally:
        reward.close()


KILLED_TRAINER = """
import threading
from grpo_ext.rewards import build_rewards
(reward,), _ = build_rewards([{"name": "reward_fixtures.hangs", "timeout": 600, "workers": 2}])
threading.Thread(target=reward, args=(["hang", "hang too"],), daemon=True).start()
while reward.pool is None or len(reward.pool.workers) < 2 or any(w.job is None for w in reward.pool.workers):
    pass
print(*[w.process.pid for w in reward.pool.workers], flush=True)
threading.Event().wait()
"""


def test_workers_stuck_in_a_reward_die_with_a_trainer_killed_outright():
    """SIGKILL (or the OOM killer) gives the trainer no chance to stop its workers, and a worker stuck in a reward
    never reads its pipe: the kernel must end it."""
    trainer = subprocess.Popen([sys.executable, "-c", KILLED_TRAINER], stdout=subprocess.PIPE, text=True)
    try:
        workers = [psutil.Process(int(pid)) for pid in trainer.stdout.readline().split()]
        assert len(workers) == 2 and all(w.is_running() for w in workers)
    finally:
        trainer.kill()
        trainer.wait()
    gone, alive = psutil.wait_procs(workers, timeout=30)
    for process in alive:
        process.kill()
    assert alive == []


def test_workers_ignore_the_signals_the_trainer_handles():
    """Ctrl-C and SLURM's SIGTERM reach the whole process group: the trainer stops after its step, with a checkpoint,
    so the workers must still be there to score it."""
    reward = in_workers("reward_fixtures.prefers_short", workers=1)
    try:
        assert reward(["ab"]) == [-0.2]
        (worker,) = reward.pool.workers
        os.kill(worker.process.pid, signal.SIGINT)
        os.kill(worker.process.pid, signal.SIGTERM)
        time.sleep(0.5)
        assert reward(["abcd"]) == [-0.4] and reward.pool.workers[0] is worker
    finally:
        reward.close()


def test_columns_come_from_the_reward_and_bad_settings_are_named():
    assert reward_columns(in_workers("reward_fixtures.reads_words")) == ("words",)
    cases = {
        "arithmetic_shaping": "task.rewards[0]: timeout is for rewards of your own; 'arithmetic_shaping' keeps its",
        "reward_fixtures.prefers_short": "task.rewards[0]: timeout must be > 0 and workers >= 1, got timeout=0,",
    }
    for name, message in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            build_rewards([{"name": name, "timeout": 0 if "." in name else 5}])


def test_training_with_a_reward_in_workers_logs_it_and_leaves_no_process(tmp_path):
    before = spawned_children()
    rewards = "task.rewards=[{name: arithmetic_shaping}, {name: reward_fixtures.prefers_short, timeout: 30}]"
    train(compose_config(["task=arithmetic", "model=tiny", *FAST, rewards, "trainer.learning_rate=1e-3"]), tmp_path)
    records = [r for r in read_metrics(tmp_path) if "reward" in r]
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["rewards/prefers_short/mean"] < 0 and r["rewards/prefers_short/errors"] == 0 for r in records)
    assert spawned_children() == before
