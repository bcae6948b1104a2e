"""data=dataset through `datasets`: hub layouts loaded by path exactly as a hub name would be, TRL's preference formats
(text, token ids, conversational with an explicit or an implicit prompt), and the errors a user meets first.

Everything is made here, offline: the tiny character-level tokenizer with a chat template and the stock GPT-2 of
test_hf_world, and datasets written in the layouts the hub serves (data/<split>-00000-of-00001.parquet) or
`save_to_disk` writes.
"""
from __future__ import annotations

import json
import math
import time

import pytest

from conftest import series, train_run
from gapstudy.config import ConfigError, compose
from gapstudy.data.pair_log import PairLogWriter
from gapstudy.data.preference import read_preference_rows
from gapstudy.errors import DataError
from gapstudy.runs import validate
from test_hf_world import FAST, make_policy, make_tokenizer

QUESTIONS = [f"Say {w}." for w in "abcdef"]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def implicit_row(question, good, bad, history=()):
    """ultrafeedback_binarized's layout: a text prompt, and chosen/rejected holding the whole conversation."""
    return {"prompt": question, "chosen": [*history, user(question), assistant(good)],
            "rejected": [*history, user(question), assistant(bad)], "score_chosen": 9.0, "score_rejected": 2.0}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A policy directory, GSM8K-style world prompts, and preference datasets in hub layouts."""
    from datasets import Dataset, DatasetDict

    root = tmp_path_factory.mktemp("preference_datasets")
    tok = make_tokenizer()
    make_policy(tok).save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) + "\n"
                               for i in range(8)))
    # a folder laid out like the hub repo of HuggingFaceH4/ultrafeedback_binarized (implicit-prompt conversations)
    repo = root / "ultrafeedback_like"
    (repo / "data").mkdir(parents=True)
    train = [implicit_row(q, f"{q[-2]} it is", "no") for q in QUESTIONS]
    train[1] = implicit_row(QUESTIONS[1], "b", "no", history=[user("Hi"), assistant("Hello")])  # multi-turn
    Dataset.from_list(train).to_parquet(str(repo / "data" / "train_prefs-00000-of-00001.parquet"))
    Dataset.from_list([implicit_row("Say z.", "z", "no")]).to_parquet(
        str(repo / "data" / "test_prefs-00000-of-00001.parquet"))
    # TRL's explicit-prompt conversational format, saved with save_to_disk under non-default split names
    explicit = root / "explicit_disk"
    DatasetDict({
        "train_prefs": Dataset.from_list([{"prompt": [user(q)], "chosen": [assistant("yes")],
                                           "rejected": [assistant("no")]} for q in QUESTIONS]),
        "test_prefs": Dataset.from_list([{"prompt": [user("Say y.")], "chosen": [assistant("y")],
                                          "rejected": [assistant("n")]}]),
    }).save_to_disk(str(explicit))
    text = root / "text.jsonl"  # TRL's standard (text) format with an explicit prompt
    text.write_text("".join(json.dumps({"prompt": q, "chosen": " yes", "rejected": " no"}) + "\n" for q in QUESTIONS))
    return {"root": root, "model": root / "policy", "prompts": prompts, "repo": repo, "explicit": explicit,
            "text": text, "tok": tok}


def world_overrides(hub, *extra):
    return ["world=hf", f"world.model={hub['model']}", f"world.prompts.path={hub['prompts']}",
            "world.prompts.field=question", "world.prompts.answer_field=answer", "world.prompts.eval_size=4",
            "world.reward.kind=gsm8k", "world.max_new_tokens=8", *extra]


def read(hub, *data, encode=True):
    """read_preference_rows as DatasetSource calls it, with world=hf's tokenizer and prompt encoder."""
    from gapstudy.worlds.hf import prompt_encoder

    cfg = compose(world_overrides(hub, "data=dataset", *data))
    tok, encoder = prompt_encoder(cfg.world)
    rows = read_preference_rows(cfg.data, tok, tok.eos_token_id, encoder.ids if encode else None,
                                str(hub["root"] / "cache"))
    return rows, tok, encoder.ids


def reply_ids(tok, text):
    return tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]


# ---------------------------------------------------------------- the layouts and formats
def test_a_hub_layout_folder_loads_its_split_with_implicit_prompts(hub):
    rows, tok, encode = read(hub, f"data.path={hub['repo']}", "data.split=train_prefs", "data.prompt_field=null")
    assert len(rows) == len(QUESTIONS)  # train_prefs only, not test_prefs
    first = rows[0]
    assert first["prompt"] == encode([user("Say a.")])  # the turns before the reply, through the chat template
    assert tok.decode(first["prompt"]) == "<bos>[user]Say a.\n[assistant]"
    assert first["chosen"] == reply_ids(tok, "a it is") and first["rejected"] == reply_ids(tok, "no")
    # multi-turn: every turn but the trailing assistant reply is the prompt
    assert tok.decode(rows[1]["prompt"]) == "<bos>[user]Hi\n[assistant]Hello\n[user]Say b.\n[assistant]"
    assert rows[1]["chosen"] == reply_ids(tok, "b")
    test_split, _, _ = read(hub, f"data.path={hub['repo']}", "data.split=test_prefs", "data.prompt_field=null")
    assert [tok.decode(r["prompt"]) for r in test_split] == ["<bos>[user]Say z.\n[assistant]"]
    # the default prompt_field=prompt: a text prompt that is the conversation's one user turn gives the same ids;
    # one that leaves out earlier turns (row 1) is an error rather than a silently shorter prompt
    with_prompt, _, _ = read(hub, f"data.path={hub['repo']}", "data.split=test_prefs")
    assert [r["prompt"] for r in with_prompt] == [r["prompt"] for r in test_split]
    with pytest.raises(DataError, match="row 1's prompt field disagrees with the turns before the replies"):
        read(hub, f"data.path={hub['repo']}", "data.split=train_prefs")


def test_a_save_to_disk_dataset_dict_with_explicit_prompt_conversations(hub):
    rows, tok, encode = read(hub, f"data.path={hub['explicit']}", "data.split=train_prefs")
    assert [r["prompt"] for r in rows] == [encode([user(q)]) for q in QUESTIONS]
    assert all(r["chosen"] == reply_ids(tok, "yes") and r["rejected"] == reply_ids(tok, "no") for r in rows)
    held_out, _, _ = read(hub, f"data.path={hub['explicit']}", "data.split=test_prefs")
    assert held_out[0]["prompt"] == encode([user("Say y.")]) and held_out[0]["chosen"] == reply_ids(tok, "y")


def test_text_rows_use_the_template_for_prompts_and_plain_tokens_for_responses(hub):
    rows, tok, encode = read(hub, f"data.path={hub['text']}")
    assert [r["prompt"] for r in rows] == [encode(q) for q in QUESTIONS]
    assert rows[0]["chosen"] == reply_ids(tok, " yes") and rows[0]["rejected"] == reply_ids(tok, " no")
    plain, _, _ = read(hub, f"data.path={hub['text']}", encode=False)  # a world without a prompt encoder
    assert plain[0]["prompt"] == tok.encode("Say a.", add_special_tokens=False)


def test_a_run_directory_and_its_pairs_folder_are_preference_datasets(hub, tmp_path):
    logged = [{"step": s, "prompt": [5, 6], "chosen": [7, 1], "rejected": [8, 1], "chosen_reward": 1.0,
               "rejected_reward": 0.0, "chosen_logps": None, "rejected_logps": None, "sampler_version": s,
               "task": "default"} for s in range(3)]
    writer = PairLogWriter(tmp_path / "run")
    writer.write(logged)
    writer.flush()
    for path in (tmp_path / "run", tmp_path / "run" / "pairs"):
        rows, _, _ = read(hub, f"data.path={path}")
        assert [(r["prompt"], r["chosen"], r["rejected"], r["sampler_version"]) for r in rows] == \
               [([5, 6], [7, 1], [8, 1], s) for s in range(3)]


# ---------------------------------------------------------------- bad input
def test_prompt_turns_that_differ_between_chosen_and_rejected_are_an_error(hub, tmp_path):
    path = tmp_path / "mismatch.jsonl"
    path.write_text(json.dumps({"chosen": [user("Say a."), assistant("a")],
                                "rejected": [user("Say b."), assistant("b")]}) + "\n")
    with pytest.raises(DataError, match="row 0's chosen and rejected conversations differ before their replies"):
        read(hub, f"data.path={path}", "data.prompt_field=null")
    disagree = tmp_path / "disagree.jsonl"
    disagree.write_text(json.dumps(implicit_row("Say a.", "a", "b") | {"prompt": "Say c."}) + "\n")
    with pytest.raises(DataError, match="disagrees with the turns before the replies.*data.prompt_field=null"):
        read(hub, f"data.path={disagree}")


def test_messages_without_a_chat_template_and_text_implicit_prompts_are_errors(hub):
    with pytest.raises(DataError, match="chat messages, which need a chat template"):
        read(hub, f"data.path={hub['repo']}", "data.split=train_prefs", "data.prompt_field=null", encode=False)
    with pytest.raises(DataError, match=r"implicit prompts in plain text \(Anthropic/hh-rlhf\) are not supported"):
        read(hub, f"data.path={hub['text']}", "data.prompt_field=null")


def test_an_unknown_split_lists_the_splits(hub):
    not_a_split = r"data.split='train' is not a split of .*valid choices: "
    with pytest.raises(ConfigError, match=not_a_split + "test_prefs, train_prefs"):  # a hub layout folder
        read(hub, f"data.path={hub['repo']}", "data.prompt_field=null")
    with pytest.raises(ConfigError, match=not_a_split + "train_prefs, test_prefs"):  # save_to_disk
        read(hub, f"data.path={hub['explicit']}")


def test_missing_fields_list_the_columns_and_an_empty_split_is_an_error(hub, tmp_path):
    with pytest.raises(DataError, match="lacks field\\(s\\) good; it has: prompt, chosen, rejected, score_chosen, "
                                        "score_rejected"):
        read(hub, f"data.path={hub['repo']}", "data.split=train_prefs", "data.chosen_field=good")
    from datasets import Dataset

    empty = tmp_path / "empty_repo"
    (empty / "data").mkdir(parents=True)
    Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}).to_parquet(
        str(empty / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(ConfigError, match="is empty"):
        read(hub, f"data.path={empty}")
    Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}).to_parquet(str(tmp_path / "empty.parquet"))
    with pytest.raises(ConfigError, match="is empty"):
        read(hub, f"data.path={tmp_path / 'empty.parquet'}", "data.split=train_prefs")  # one file: one split


def test_an_unreachable_hub_name_is_a_clean_fast_error(hub, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # datasets reads the variable once, at import
    cfg = validate(compose(world_overrides(hub, "data=dataset", "data.path=no-such-org/no-such-prefs")))  # a hub name
    start = time.time()
    with pytest.raises(ConfigError, match=r"data.path='no-such-org/no-such-prefs' is neither a local path nor a "
                                          r"dataset reachable on the hub"):
        read_preference_rows(cfg.data, hub["tok"], hub["tok"].eos_token_id, None, str(hub["root"] / "cache"))
    assert time.time() - start < 5


def test_data_settings_are_checked_at_start_up(hub, tmp_path):
    with pytest.raises(ConfigError, match=f"data.path='{tmp_path}/none.jsonl' does not exist"):
        validate(compose(world_overrides(hub, "data=dataset", f"data.path={tmp_path}/none.jsonl")))
    with pytest.raises(ConfigError, match="data.split=None is invalid; valid: a name"):
        validate(compose(world_overrides(hub, "data=dataset", f"data.path={hub['repo']}", "data.split=null")))
    with pytest.raises(ConfigError, match="data.chosen_field=None is invalid"):
        validate(compose(world_overrides(hub, "data=dataset", f"data.path={hub['repo']}", "data.chosen_field=null")))
    with pytest.raises(ConfigError, match=r"data.max_prompt_tokens=0 is invalid; valid: an integer >= 1 or null"):
        validate(compose(world_overrides(hub, "data=dataset", f"data.path={hub['repo']}", "data.max_prompt_tokens=0")))


def test_pairs_beyond_the_token_limits_are_dropped_with_a_warning():
    from gapstudy.data.preference import drop_long_pairs

    rows = [{"prompt": [1] * p, "chosen": [2] * c, "rejected": [3] * r} for p, c, r in
            [(4, 2, 2), (5, 2, 2), (4, 3, 1), (4, 1, 3), (3, 3, 3)]]
    assert drop_long_pairs(rows, None, None, "d") == rows
    with pytest.warns(UserWarning, match=r"dropped 4 of 5 pairs longer than data.max_prompt_tokens=4 / "
                                         r"data.max_response_tokens=2"):
        kept = drop_long_pairs(rows, 4, 2, "d")
    assert kept == [rows[0]]  # (5, 2, 2): prompt too long; the others: a response too long
    with pytest.warns(UserWarning, match="dropped 1 of 5"):
        assert drop_long_pairs(rows, 4, None, "d") == [rows[0], rows[2], rows[3], rows[4]]
    with pytest.raises(DataError, match="every one of its 5 pairs exceeds"):
        drop_long_pairs(rows, 2, None, "d")


# ---------------------------------------------------------------- end to end
def test_a_hub_layout_conversational_dataset_trains_dpo_end_to_end(hub, tmp_path):
    overrides = world_overrides(hub, "data=dataset", f"data.path={hub['repo']}", "data.split=train_prefs",
                                "data.prompt_field=null", "algo=dpo", "steps=2", "batch_size=2")
    run_dir, final, records = train_run(tmp_path, overrides, fast=FAST)
    losses = series(records, "train/loss")
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    from gapstudy.data.pair_log import read_pair_log

    rows, _, _ = read(hub, f"data.path={hub['repo']}", "data.split=train_prefs", "data.prompt_field=null")
    trained = [(r["prompt"], r["chosen"], r["rejected"]) for batch in read_pair_log(run_dir) for r in batch]
    assert len(trained) == 4 and all(t in [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] for t in trained)
    assert (tmp_path / ".cache" / "datasets").is_dir()  # converted under <paths.results>/.cache/datasets
