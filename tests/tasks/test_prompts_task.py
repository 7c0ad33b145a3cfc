"""``task=prompts``: a user's own rows and reward, from file to training; every bad row named before a model loads."""

from __future__ import annotations

import json
import re

import pytest

from grpo_ext.errors import GrpoExtError
from grpo_ext.run.records import read_metrics
from grpo_ext.sft import fine_tune
from grpo_ext.tasks import build_task
from grpo_ext.train import train
from support import FAST, REPO, compose_config, run_cli

EXAMPLE = REPO / "examples" / "word_count.jsonl"
WORD_COUNT = "task.rewards=[{name: examples.word_count.word_count}]"


def write_rows(path, rows, eval_size=1):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [f"task.path={path}", f"task.eval_size={eval_size}"]


def prompts_task(*overrides: str):
    return build_task(compose_config(["task=prompts", "model=tiny", WORD_COUNT, *overrides]).task)


def test_example_rows_become_chat_prompts_with_their_columns_and_a_fixed_split():
    splits = prompts_task(f"task.path={EXAMPLE}", "task.eval_size=20", "task.system_prompt=Be brief.")
    assert (len(splits.train), len(splits.eval)) == (160, 20)
    assert set(splits.train.column_names) == {"prompt", "words", "topic", "reference"}
    row = splits.train[0]
    assert row["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert row["prompt"][1]["role"] == "user" and f"exactly {row['words']} words" in row["prompt"][1]["content"]
    assert row["reference"] == ""
    again = prompts_task(f"task.path={EXAMPLE}", "task.eval_size=20", "task.system_prompt=Be brief.")
    assert list(again.eval["prompt"]) == list(splits.eval["prompt"])
    other_seed = prompts_task(f"task.path={EXAMPLE}", "task.eval_size=20", "task.seed=1")
    assert list(other_seed.eval["topic"]) != list(splits.eval["topic"])


def test_template_reads_other_columns_and_reference_column_is_kept(tmp_path):
    rows = [{"q": f"{i} + {i}", "unit": "apples", "gold": f"{2 * i}", "sol": f"<answer>{2 * i}</answer>"}
            for i in range(5)]  # fmt: skip
    splits = prompts_task(
        *write_rows(tmp_path / "rows.jsonl", rows),
        "task.prompt_column=q",
        "task.prompt_template='What is {prompt}, in {unit}?'",
        "task.reference_column=sol",
    )
    row = splits.train[0]
    gold = int(row["gold"])
    assert row["prompt"] == [{"role": "user", "content": f"What is {gold // 2} + {gold // 2}, in apples?"}]
    assert row["reference"] == f"<answer>{gold}</answer>"
    assert set(splits.train.column_names) == {"prompt", "unit", "gold", "reference"}  # q became the prompt


def test_chat_prompts_are_kept_and_a_reference_column_is_used_by_default(tmp_path):
    chat = [{"role": "system", "content": "Count."}, {"role": "user", "content": "one two"}]
    rows = [{"prompt": chat, "words": 2, "reference": "two"}, {"prompt": chat[1:], "words": 2, "reference": None}]
    splits = prompts_task(*write_rows(tmp_path / "rows.jsonl", rows), "task.eval_size=1", "task.seed=3",
                          "task.system_prompt=Be exact.")  # fmt: skip
    prompts = {json.dumps(p) for p in list(splits.train["prompt"]) + list(splits.eval["prompt"])}
    assert prompts == {json.dumps(chat), json.dumps([{"role": "system", "content": "Be exact."}, chat[1]])}
    assert sorted(list(splits.train["reference"]) + list(splits.eval["reference"])) == ["", "two"]


def test_a_chat_that_ends_with_the_answer_gives_the_prompt_and_the_reference(tmp_path):
    """Chat SFT data (``messages`` ending with the assistant's turn) trains as it is: the answer is the reference."""
    rows = [
        {"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}"}], "n": i}
        for i in range(4)
    ] + [{"messages": [{"role": "user", "content": "Say 9."}], "n": 9}]
    splits = prompts_task(*write_rows(tmp_path / "rows.jsonl", rows), "task.prompt_column=messages",
                          "task.system_prompt=Obey.")  # fmt: skip
    by_n = {row["n"]: row for split in (splits.train, splits.eval) for row in split}
    assert by_n[2]["prompt"] == [{"role": "system", "content": "Obey."}, {"role": "user", "content": "Say 2."}]
    assert by_n[2]["reference"] == "2"
    assert by_n[9]["reference"] == ""  # a chat that ends with the user's turn has no reference
    assert "messages" not in splits.train.column_names


def test_trl_s_prompt_completion_data_sets_give_their_completion_as_the_reference(tmp_path):
    rows = [{"prompt": f"Say {i}.", "completion": f"{i}", "n": i} for i in range(3)] + [
        {
            "prompt": [{"role": "user", "content": "Say 7."}],
            "completion": [{"role": "assistant", "content": "7"}],
            "n": 7,
        }
    ]
    for name, chosen in (("rows.jsonl", rows[:3]), ("chat.jsonl", [rows[3], {**rows[3], "n": 8}])):
        splits = prompts_task(*write_rows(tmp_path / name, chosen))
        by_n = {row["n"]: row for split in (splits.train, splits.eval) for row in split}
        assert all(row["reference"] == str(min(n, 7)) for n, row in by_n.items()), by_n
        assert "completion" not in splits.train.column_names  # a name TRL gives the reward itself


def test_eval_path_gives_the_held_out_prompts(tmp_path):
    train_rows = [{"prompt": f"train {i}", "words": 3} for i in range(6)]
    eval_rows = [{"prompt": f"eval {i}", "words": 4} for i in range(4)]
    write_rows(tmp_path / "eval.jsonl", eval_rows)
    splits = prompts_task(*write_rows(tmp_path / "train.jsonl", train_rows, eval_size=3),
                          f"task.eval_path={tmp_path / 'eval.jsonl'}")  # fmt: skip
    assert len(splits.train) == 6 and len(splits.eval) == 3
    assert all(p[0]["content"].startswith("eval") for p in list(splits.eval["prompt"]))


def test_a_json_file_may_hold_a_list_or_one_object_per_line(tmp_path):
    rows = [{"prompt": f"p{i}", "words": i + 1} for i in range(4)]
    (tmp_path / "list.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows))
    for name in ("list.json", "lines.json"):
        splits = prompts_task(f"task.path={tmp_path / name}", "task.eval_size=1")
        assert sorted(list(splits.train["words"]) + list(splits.eval["words"])) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ('{"prompt": "a", "words": 1}\n\n{"prompt": "b", "words": \n', [], "rows.jsonl line 3: not valid JSON"),
        ('{"prompt": "a", "words": 1}\n[1, 2]\n', [], "line 2: expected a JSON object, got list"),
        ('{"prompt": "a", "words": 1}\n{"words": 2}\n', [], "row 2: column 'prompt' must be a non-empty string"),
        ('{"prompt": "a", "words": 1}\n{"prompt": " ", "words": 2}\n', [], "row 2: column 'prompt'"),
        (
            '{"prompt": "a", "words": 1}\n{"prompt": "b", "words": "two"}\n',
            [],
            "column 'words' mixes values that cannot share a column: int (row 1), str (row 2)",
        ),
        (
            '{"prompt": "a", "words": 1}\n{"prompt": [{"role": "bot", "content": "b"}], "words": 2}\n',
            [],
            "row 2: column 'prompt', message 0: expected {'role': one of ['system', 'user', 'assistant']",
        ),
        (
            '{"prompt": [{"role": "system", "content": "b"}, {"role": "assistant", "content": "c"}], "words": 2}\n',
            [],
            "row 1: column 'prompt': the chat must end with a user message, before the assistant's answer that "
            "ends it",
        ),
        (
            '{"prompt": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}], '
            '"reference": "d"}\n',
            [],
            "row 1: column 'prompt' ends with the assistant's answer and column 'reference' gives a reference as well",
        ),
        ('{"prompt": [], "words": 2}\n', [], "row 1: column 'prompt': the chat must end with a user message"),
        (
            '{"prompt": "a", "words": 1}\n',
            ["task.prompt_column=question"],
            "task.prompt_column='question' is not a column of task.path=",
        ),
        (
            '{"prompt": "a", "words": 1}\n',
            ["task.prompt_template='{prompt} ({unit})'"],
            "task.prompt_template names {unit}, which is not a column",
        ),
        (
            '{"prompt": "a", "unit": "kg"}\n{"prompt": "b"}\n',
            ["task.prompt_template='{prompt} ({unit})'"],
            "row 2: task.prompt_template needs {unit}, which this row lacks",
        ),
        ('{"prompt": "a", "words": 1}\n', ["task.prompt_template='{prompt'"], "task.prompt_template='{prompt': "),
        (
            '{"prompt": [{"role": "user", "content": "b"}]}\n',
            ["task.prompt_template='Q: {prompt}'"],
            "task.prompt_template applies to string prompts only",
        ),
        ('{"prompt": "a", "reference": 3}\n', [], "row 1: column 'reference' must be a string"),
        (
            '{"prompt": "a", "trainer_state": "x"}\n',
            [],
            "column 'trainer_state' is a name TRL reserves in what it passes rewards",
        ),
        (
            '{"prompt": "a", "reference": "b", "completion": "x"}\n',
            [],
            "column 'completion' is a name TRL reserves in what it passes rewards",
        ),
        (
            '{"prompt": "a", "completion": [{"role": "user", "content": "x"}]}\n',
            [],
            "row 1: column 'completion' must be a string or one assistant message",
        ),
        ('{"prompt": "a"}\n', ["task.eval_size=1"], "has 1 usable rows, not more than task.eval_size=1"),
    ],
)
def test_bad_rows_are_named(tmp_path, text, overrides, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        prompts_task(f"task.path={path}", "task.eval_size=1", *overrides)
    assert message in str(err.value)


def test_eval_size_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="task.eval_size must be >= 1"):
        prompts_task(f"task.path={EXAMPLE}", "task.eval_size=0")


def test_bad_files_are_named(tmp_path):
    (tmp_path / "dict.json").write_text('{"prompt": "a"}')
    (tmp_path / "bad.parquet").write_text("not parquet")
    (tmp_path / "rows.tsv").write_text("prompt\twords\na\t1\n")
    (tmp_path / "cells.csv").write_text("prompt,words\na,1\nb,2,3\n")
    (tmp_path / "twice.csv").write_text("prompt,prompt\na,b\n")
    (tmp_path / "empty.csv").write_text("")
    cases = {
        "dict.json": "expected a list of objects (or one object per line), got dict",
        "bad.parquet": "cannot read it as Parquet",
        "none.jsonl": "no such file",
        "none.csv": "no such file",
        "rows.tsv": "a local file of a format not read here (.tsv): give a .jsonl, .json, .parquet or .csv file",
        "cells.csv": "line 3: 3 cells, where the header names 2 columns",
        "twice.csv": "the header names a column twice: ['prompt', 'prompt']",
        "empty.csv": "the first line must name every column (a header such as prompt,answer)",
    }
    for name, message in cases.items():
        with pytest.raises(ValueError, match="task.path=.*" + re.escape(message)):
            prompts_task(f"task.path={tmp_path / name}")


@pytest.mark.slow
def test_cli_names_the_missing_keys_then_a_bad_line_in_seconds(tmp_path):
    result = run_cli(["-m", "grpo_ext.train", "task=prompts", *FAST], cwd=tmp_path)
    assert result.returncode == 1
    assert "config error: these keys need a value, on the command line (KEY=VALUE): task.path, task.rewards" in (
        result.stderr
    )
    (tmp_path / "rows.jsonl").write_text('{"prompt": "a", "words": 1}\n{"prompt": "b" "words": 2}\n')
    result = run_cli(
        ["-m", "grpo_ext.train", "task=prompts", f"task.path={tmp_path / 'rows.jsonl'}",
         "task.rewards=[{name: arithmetic_shaping}]", "model=tiny", *FAST, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "task error: task.path=" in result.stderr and "rows.jsonl line 2: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_custom_reward_trains_on_the_custom_column(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # examples.word_count, as from the repository root
    cfg = compose_config(["task=prompts", f"task.path={EXAMPLE}", WORD_COUNT, "model=tiny", *FAST,
                          "task.train_size=32", "task.eval_size=8", "trainer.learning_rate=1e-3"])  # fmt: skip
    train(cfg, tmp_path)
    records = [r for r in read_metrics(tmp_path) if "reward" in r]
    assert [r["step"] for r in records] == [1, 2]
    # The tiny model writes a few random words: a target of 3-14 words scores above 0 for some, and the score is
    # the reward's own (no NaN: every row had its 'words' column).
    assert all(0 < r["rewards/word_count/mean"] <= 1 for r in records)


def test_a_csv_file_gives_typed_columns_rows_named_by_their_line_and_trains(tmp_path, monkeypatch):
    """A spreadsheet's export: a byte-order mark, a quoted cell over two lines, a blank line, empty cells. Before,
    a .csv path was taken for a Hub dataset name, and the error spoke of repository ids."""
    path = tmp_path / "rows.csv"
    path.write_text(
        '\ufeffprompt,words,topic,code,weight\n"Write, in 3\nwords",3,rain,007,1\n\nWrite 4 words,4,,12,0.5\n'
        "Write 5 words,5,snow,nan,\n",
        encoding="utf-8",
    )
    from grpo_ext.tasks.base import read_csv_rows

    table = read_csv_rows(path, "rows.csv")
    assert table.column_names == ["prompt", "words", "topic", "code", "weight"]
    assert table.numbers == [2, 5, 6]  # the lines the rows start on
    assert table.rows == [
        {"prompt": "Write, in 3\nwords", "words": 3, "topic": "rain", "code": "007", "weight": 1.0},
        {"prompt": "Write 4 words", "words": 4, "topic": None, "code": "12", "weight": 0.5},
        {"prompt": "Write 5 words", "words": 5, "topic": "snow", "code": "nan", "weight": None},
    ]
    (tmp_path / "bad.csv").write_text("prompt,words\nWrite 4 words,4\n\n , 5\n")
    with pytest.raises(ValueError, match=r"row 4: column 'prompt' must be a non-empty string"):
        prompts_task(f"task.path={tmp_path / 'bad.csv'}", "task.eval_size=1")

    monkeypatch.syspath_prepend(str(REPO))  # examples.word_count, as from the repository root
    rows = [json.loads(line) for line in EXAMPLE.read_text().splitlines()]
    lines = [f"{r['prompt']},{r['words']},{r['topic']}" for r in rows]
    (tmp_path / "word_count.csv").write_text("\n".join(["prompt,words,topic", *lines]) + "\n")
    cfg = compose_config(["task=prompts", f"task.path={tmp_path / 'word_count.csv'}", WORD_COUNT, "model=tiny", *FAST,
                          "task.train_size=32", "task.eval_size=8", "trainer.learning_rate=1e-3"])  # fmt: skip
    train(cfg, tmp_path / "run")
    assert all(0 < r["rewards/word_count/mean"] <= 1 for r in read_metrics(tmp_path / "run") if "reward" in r)


def test_a_directory_holds_a_saved_dataset_or_a_dataset_repository_s_files(tmp_path):
    """``Dataset.save_to_disk`` output and a clone of a Hub dataset repository were taken for Hub names."""
    from datasets import Dataset, DatasetDict

    rows = [{"prompt": f"Write {i} words", "words": i} for i in range(1, 7)]
    DatasetDict({"train": Dataset.from_list(rows[:4]), "test": Dataset.from_list(rows[4:])}).save_to_disk(
        tmp_path / "saved"
    )
    saved = [f"task.path={tmp_path / 'saved'}", f"task.eval_path={tmp_path / 'saved'}"]
    splits = prompts_task(*saved)
    assert sorted(splits.train["words"]) == [1, 2, 3, 4] and sorted(splits.eval["words"]) == [5, 6]
    with pytest.raises(ValueError) as err:
        prompts_task(*saved, "task.eval_split=validation")
    assert str(err.value) == (
        f"task.eval_path={tmp_path / 'saved'}: the dataset has no split 'validation' (task.eval_split); its splits: "
        "['train', 'test']"
    )
    (tmp_path / "repo" / "data").mkdir(parents=True)
    Dataset.from_list(rows).to_json(tmp_path / "repo" / "data" / "train.jsonl")
    splits = prompts_task(f"task.path={tmp_path / 'repo'}", "task.eval_size=2")
    assert sorted([*splits.train["words"], *splits.eval["words"]]) == [1, 2, 3, 4, 5, 6]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"a directory that datasets cannot read as a saved dataset \(save_to_disk\)"):
        prompts_task(f"task.path={tmp_path / 'empty'}")


def test_the_example_reward_pays_the_exact_count_clearly_more(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from examples.word_count import word_count

    chat = [{"role": "assistant", "content": "one two three four"}]
    assert word_count([chat, "a b c d e f g h i", "", "x"], words=[4, 10, 10, None]) == [1.0, 0.45, 0.0, None]


def test_sft_learns_the_rows_that_have_a_reference_and_refuses_a_task_with_none(tmp_path, caplog):
    rows = [{"prompt": f"Say {i}.", "words": 1, **({"reference": f"{i}"} if i % 2 else {})} for i in range(20)]
    task = [*write_rows(tmp_path / "rows.jsonl", rows, eval_size=4), WORD_COUNT, "model=tiny"]
    sft = ["sft.steps=2", "sft.batch_size=4"]
    cfg = compose_config(["task=prompts", *FAST, *task, *sft])
    fine_tune(cfg, tmp_path / "some")
    lacking = list(build_task(cfg.task).train["reference"]).count("")
    assert 0 < lacking < 16  # the 20 rows are shuffled before 4 are held out
    assert f"{lacking} of 16 prompts train rows have no reference completion; SFT learns the other {16 - lacking}" in (
        caplog.text
    )
    assert (tmp_path / "some" / "final_model" / "config.json").is_file()
    with pytest.raises(GrpoExtError) as stop:
        fine_tune(compose_config(["task=prompts", f"task.path={EXAMPLE}", WORD_COUNT, "model=tiny", *FAST, *sft]),
                  tmp_path / "none")  # fmt: skip
    assert stop.value.report() == (
        "task error: no row of the prompts train split has a reference completion, so SFT has nothing to learn: for "
        "a task read from a file, task.reference_column names the column holding them"
    )


def test_infer_scores_with_the_columns_a_user_reward_reads(capsys, monkeypatch):
    from grpo_ext.infer import main

    monkeypatch.syspath_prepend(str(REPO))
    task = ["task=prompts", f"task.path={EXAMPLE}", WORD_COUNT, "model=tiny", "hardware=cpu"]
    question = "Write one sentence about rain in exactly 8 words."
    assert main([question, *task, "--answer", "8"]) == 2  # word_count reads 'words', not 'answer'
    assert capsys.readouterr().err == (
        "error: reward 'word_count' reads ['words']: to score, give --column words=VALUE\n"
    )
    assert main([question, *task, "--column", "words=8", "--max-new-tokens", "16"]) == 0
    out = capsys.readouterr().out  # the completion (one greedy answer), then its score
    completion, score = out[: out.rindex("\n[reward ")], out[out.rindex("\n[reward ") + 1 :]
    off = abs(len(completion.split()) - 8)
    expected = 1.0 if off == 0 else 0.5 * max(0.0, 1.0 - off / 8)  # the reward's own formula, on what was printed
    assert score == f"[reward {expected}]\n"
    assert main([question, *task, "--column", "words"]) == 2
    assert "--column takes NAME=VALUE, got 'words'" in capsys.readouterr().err


def test_evaluation_and_sft_name_a_column_the_scoring_reward_lacks_before_a_model_loads(tmp_path):
    rows = [{"prompt": f"Say {i}.", "word": 1, "reference": f"{i}"} for i in range(8)]
    task = ["task=prompts", *write_rows(tmp_path / "rows.jsonl", rows, eval_size=2)]
    reads_words = "task.rewards=[{name: reward_fixtures.reads_words}]"
    message = "reward 'reads_words' reads column 'words', which the prompts eval split lacks"
    result = run_cli(["-m", "grpo_ext.evaluate", *task, reads_words, "model=tiny", "hardware=cpu",
                      f"hydra.run.dir={tmp_path / 'eval'}"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and f"task error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(GrpoExtError) as stop:
        fine_tune(compose_config([*FAST, *task, reads_words, "model=tiny", "eval.during_training=true"]), tmp_path)
    assert stop.value.report().startswith(f"task error: {message}")
