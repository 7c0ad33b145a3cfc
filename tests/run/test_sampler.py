"""The prompt sampler's policies, draws, state and records (``grpo_ext.run.sampler``), without a model."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from grpo_ext.config.schema import SamplerConfig, check_sampler
from grpo_ext.run.sampler import (
    BATCH,
    LAG,
    PROMPT_ID,
    Adaptive,
    Curriculum,
    PromptSampler,
    Seen,
    for_run,
    observing,
)


def rows(n: int, **columns) -> Dataset:
    return Dataset.from_dict({"prompt": [f"p{i}" for i in range(n)], "answer": [str(i) for i in range(n)], **columns})


def adaptive(size: int, **knobs) -> Adaptive:
    settings = {"solved": 1.0, "failed": 0.0, "window": 1, "weight": 0.1, "retire_after": 0, **knobs}
    return Adaptive(size, **settings)


def sampler_of(n: int, policy, per_batch: int = 4, seed: int = 0) -> PromptSampler:
    return PromptSampler(rows(n), {"t": (list(range(n)), policy)}, {"t": 1.0}, per_batch, seed)


def test_adaptive_draws_every_unseen_prompt_before_any_again():
    policy = adaptive(10)
    seen: list[Seen] = []
    first = policy.choose(seen, 6, random.Random(0))
    seen += [Seen(0, p, 4, 8) for p in first]
    second = policy.choose(seen, 6, random.Random(1))
    assert len(set(first)) == 6 and set(range(10)) - set(first) <= set(second)
    assert len(set(second)) == 6  # a batch never holds a prompt twice


def test_adaptive_draws_prompts_solved_or_failed_in_every_completion_less():
    policy = adaptive(20, weight=0.1)
    alike = [Seen(0, p, 8 if p % 2 else 0, 8) for p in range(10)]  # all solved or all failed
    mixed = [Seen(0, p, 3, 8) for p in range(10, 20)]
    counts = Counter(p for seed in range(300) for p in policy.choose(alike + mixed, 4, random.Random(seed)))
    assert sum(counts[p] for p in range(10, 20)) > 5 * sum(counts[p] for p in range(10))


def test_adaptive_retires_after_so_many_alike_groups_and_reports_it():
    policy = adaptive(3, retire_after=2)
    seen = [Seen(0, 0, 8, 8), Seen(1, 0, 8, 8), Seen(0, 1, 0, 8), Seen(0, 2, 8, 8), Seen(1, 2, 4, 8)]
    for _ in range(20):
        assert 0 not in policy.choose(seen, 2, random.Random(_))  # two alike groups in a row: retired
    assert policy.figures(seen) == {"sampler/retired": 1.0, "sampler/unseen": 0.0}
    everyone = [Seen(b, p, 0, 8) for b in (0, 1) for p in range(3)]
    assert policy.choose(everyone, 2, random.Random(0)) == []


def test_curriculum_moves_up_when_its_level_is_passed_and_back_down_when_it_fails():
    levels = [1, 1, 2, 2, 3, 3]
    policy = Curriculum(levels, advance=0.75, retreat=0.25, window=2, review=0.0)
    assert policy.level([]) == 0
    up = [Seen(0, 0, 8, 8), Seen(0, 1, 6, 8)]  # level 1 passed: mean 0.875
    assert policy.level(up) == 1
    assert set(policy.choose(up, 5, random.Random(0))) <= {2, 3}  # only level 2 now
    down = up + [Seen(1, 2, 0, 8), Seen(1, 3, 2, 8)]  # level 2 failed: mean 0.125
    assert policy.level(down) == 0
    stay = up + [Seen(1, 2, 4, 8), Seen(1, 3, 4, 8)]
    assert policy.level(stay) == 1 and policy.figures(stay) == {"sampler/level": 2.0}


def test_curriculum_reviews_the_levels_below():
    policy = Curriculum([1, 1, 2, 2], advance=0.5, retreat=None, window=1, review=0.5)
    picks = policy.choose([Seen(0, 0, 8, 8)], 4, random.Random(0))
    assert sorted(p < 2 for p in picks) == [False, False, True, True]


def test_a_batch_is_drawn_from_what_was_seen_two_batches_before_and_its_own_seed():
    a, b = sampler_of(12, adaptive(12)), sampler_of(12, adaptive(12))
    for s in (a, b):
        for p in s.draw(0):
            s.observe(0, p, 8, 8)
    b.observe(1, 5, 0, 8)  # batch 1 is still being scored while batch 2 is drawn: it must not count
    assert a.draw(2) == b.draw(2) and a.draw(3) != b.draw(3)
    assert a.draw(2) != sampler_of(12, adaptive(12), seed=1).draw(2)


def test_a_mixture_batch_holds_the_parts_shares_and_a_part_out_of_prompts_leaves_its_share():
    data = rows(12)
    parts = {"a": (list(range(8)), adaptive(8)), "b": (list(range(8, 12)), adaptive(4, retire_after=1))}
    sampler = PromptSampler(data, parts, {"a": 3.0, "b": 1.0}, 4, 0)
    drawn = [sampler.draw(n) for n in range(2)]
    assert [sum(p >= 8 for p in batch) for batch in drawn] == [1, 1]
    for p in range(8, 12):
        sampler.observe(0, p, 8, 8)  # b's prompts all solved: retired
    assert all(p < 8 for p in sampler.draw(LAG)) and len(sampler.draw(LAG)) == 4


def test_the_stream_ends_saying_why_when_every_prompt_is_retired():
    sampler = sampler_of(4, adaptive(4, retire_after=1), per_batch=2)
    for p in range(4):
        sampler.observe(0, p, 0, 8)
    stream = list(sampler.stream())
    assert [row[BATCH] for row in stream] == [0, 0, 1, 1]  # batches 0 and 1 come before the state says so
    assert (
        sampler.stopped
        == "every prompt is retired (solved, or failed, in every completion of its last groups) at batch 2"
    )
    assert all(row["prompt"] == f"p{row[PROMPT_ID]}" for row in stream)


def test_the_state_restores_exactly_and_a_measurement_seeds_it():
    one = sampler_of(8, adaptive(8))
    for p in one.draw(0):
        one.observe(0, p, 3, 8)
    two = sampler_of(8, adaptive(8))
    two.restore(one.state(step=1))
    assert [two.draw(n) for n in range(4)] == [one.draw(n) for n in range(4)]
    seeded = sampler_of(8, adaptive(8, retire_after=1), per_batch=2)
    assert (
        seeded.seed_from(
            [{"prompt": f"p{i}", "pass_rate": 1.0} for i in range(6)] + [{"prompt": "x", "pass_rate": 0.5}]
        )
        == 6
    )
    assert sorted(seeded.draw(0)) == [6, 7]  # the measured prompts are seen (and, all solved, retired)
    assert seeded.histogram()["sampler/prompts_all_solved"] == 6 and seeded.histogram()["sampler/prompts_unseen"] == 2


def test_the_histogram_bins_each_prompt_by_its_latest_pass_rate():
    sampler = sampler_of(6, adaptive(6))
    for prompt, passed in ((0, 0), (1, 1), (2, 4), (3, 5), (4, 7), (4, 8)):
        sampler.observe(0, prompt, passed, 8)
    assert sampler.histogram() == {
        "sampler/prompts_unseen": 1.0, "sampler/prompts_none_solved": 1.0, "sampler/prompts_solved_to_25": 1.0,
        "sampler/prompts_solved_to_50": 1.0, "sampler/prompts_solved_to_75": 1.0,
        "sampler/prompts_solved_below_100": 0.0, "sampler/prompts_all_solved": 1.0,
    }  # fmt: skip


def test_the_observed_reward_records_its_own_part_failures_unsolved_and_logs_what_it_did():
    sampler = PromptSampler(rows(4), {"a": ([0, 1], adaptive(2)), "b": ([2, 3], adaptive(2))}, {"a": 1, "b": 1}, 2, 0)

    def judge(completions, **kwargs):
        return [1.0, None, 1.0, 1.0, 0.0, 0.0]

    judge.rows_of = "a"
    logged: dict[str, list[float]] = {}
    (observed,) = observing([judge], sampler)
    values = observed(completions=["x"] * 6, prompt_id=[0, 0, 1, 1, 2, 2], sampler_batch=[0] * 6,
                      task=["a", "a", "a", "a", "b", "b"],
                      log_metric=lambda key, value: logged.setdefault(key, []).append(value))  # fmt: skip
    assert values == [1.0, None, 1.0, 1.0, 0.0, 0.0]
    assert sorted(sampler.seen, key=lambda s: s.prompt) == [Seen(0, 0, 1, 2), Seen(0, 1, 2, 2)]  # b's rows: b's judge
    assert logged["sampler/all_solved"] == [0.5] and logged["sampler/none_solved"] == [0.0]
    assert observed.rows_of == "a" and observed.__name__ == "judge"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"name": "greedy"}, "sampler.name must be one of"),
        ({"name": "adaptive", "solved": 1.5}, "sampler.solved must be in [0, 1]"),
        ({"name": "curriculum", "advance": -0.1}, "sampler.advance must be in [0, 1]"),
        ({"name": "curriculum", "retreat": 0.9}, "sampler.retreat must be in [0, sampler.advance=0.8)"),
        ({"name": "curriculum", "window": 0}, "sampler.window must be >= 1"),
        ({"name": "adaptive", "recent": 0}, "sampler.recent must be >= 1"),
        ({"name": "adaptive", "failed": 0.5, "solved": 0.5}, "sampler.failed=0.5 must be below sampler.solved=0.5"),
        ({"name": "adaptive", "retire_after": -1}, "sampler.retire_after must be >= 0"),
        ({"name": "adaptive", "measured": "/nonexistent/difficulty.jsonl"}, "sampler.measured=/nonexistent"),
    ],
)
def test_bad_sampler_settings_are_refused_naming_the_key(change, named):
    node = OmegaConf.structured(SamplerConfig(**change))
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        check_sampler(node, max_steps=10)


def test_a_sampler_needs_max_steps_and_a_curriculum_needs_levels():
    with pytest.raises(ValueError, match="set trainer.max_steps"):
        check_sampler(OmegaConf.structured(SamplerConfig(name="adaptive")), max_steps=-1)
    cfg = OmegaConf.create({"sampler": SamplerConfig(name="curriculum"), "task": {"name": "mathexpr"}, "seed": 0})
    with pytest.raises(
        ValueError, match="sampler=curriculum needs the rows' levels, and task mathexpr's rows have none"
    ):
        for_run(cfg, rows(4), per_batch=2)
    cfg.task.name = "arithmetic"
    sampler = for_run(cfg, rows(4, level=[1, 1, 2, 2]), per_batch=2)
    assert sampler is not None and set(sampler.draw(0)) <= {0, 1}
    cfg.sampler.name = "uniform"
    assert for_run(cfg, rows(4), per_batch=2) is None
