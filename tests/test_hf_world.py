"""world=hf: real models and data by path, exactly as a hub name would be loaded; math-verify on real answer strings.

Everything is made here, offline: a character-level tokenizer with a chat template, a stock 1-layer GPT-2 and a
GPT-2 reward model (from_config + save_pretrained), and tiny datasets in the hub's formats (GSM8K-style jsonl,
parquet, a save_to_disk DatasetDict with chat-message prompts).
"""
from __future__ import annotations

import json
import math
import string

import pytest
import torch

from conftest import series, train_run
from gapstudy.config import ConfigError, compose
from gapstudy.generation import left_pad
from gapstudy.runs import validate
from gapstudy.verifiers import VERIFIERS, gsm8k_reward, math_verify_reward
from gapstudy.worlds import build_world

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
TEMPLATE = ("<bos>{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")
FAST = ["eval.prompts=4", "eval.every=0", "progress=false", "checkpoint_every=0", "save_checkpoint=false",
        "threads=1", "device=cpu"]
NAMES = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lu"]


# ---------------------------------------------------------------- math-verify and GSM8K on real answer strings
@pytest.mark.parametrize("response, answer, expected", [
    (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
    (r"So the probability is $\boxed{0.5}$.", r"\frac{1}{2}", 1.0),
    (r"The answer is $\boxed{3}$", "3", 1.0),
    (r"We get $x = \frac{6}{2}$, so the answer is $\boxed{3}$.", r"$3$", 1.0),
    (r"\boxed{4}", "3", 0.0),
    (r"\boxed{\frac{1}{3}}", "0.5", 0.0),
    ("}}{{ \\\\ ?? no math here", "3", 0.0),
    ("", "3", 0.0),
])
def test_math_verify_judges_equivalence_not_strings(response, answer, expected):
    assert math_verify_reward(response, answer) == expected


@pytest.mark.parametrize("response, answer, expected", [
    ("so she has 18 dollars", "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18", 1.0),
    ("#### 1,234", "1234", 1.0),
    ("It costs $1,234.00.", "#### 1234", 1.0),
    ("18 at first, then 20 in the end", "#### 18", 0.0),
    ("The answer: #### 7 (I checked 8 times)", "#### 7", 1.0),
    ("no number at all", "#### 18", 0.0),
])
def test_gsm8k_takes_the_final_number(response, answer, expected):
    assert gsm8k_reward(response, answer) == expected
    assert VERIFIERS["gsm8k"] is gsm8k_reward


# ---------------------------------------------------------------- tiny models and datasets in hub formats
def make_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + chars)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>", chat_template=TEMPLATE, clean_up_tokenization_spaces=False)


def make_policy(tok):
    """A stock GPT-2 whose output favours ' ', '1', '2' and <eos> (so GSM8K answers 1 and 2 are sometimes right)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=32, n_positions=512,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                        tie_word_embeddings=False)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.transformer.ln_f.weight.fill_(0.3)
        model.transformer.ln_f.bias.zero_()
        for dim, token in enumerate([" ", "1", "2", "<eos>"]):
            model.lm_head.weight[tok.convert_tokens_to_ids(token), dim] = 1.0
            model.transformer.ln_f.bias[dim] = 5.0
    return model


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Model directories and datasets on disk, loaded by path exactly as hub names would be."""
    from datasets import Dataset, DatasetDict
    from transformers import GPT2Config, GPT2ForSequenceClassification

    root = tmp_path_factory.mktemp("hf_assets")
    tok = make_tokenizer()
    model_dir = root / "policy"
    make_policy(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rm_dir = root / "reward_model"
    torch.manual_seed(1)
    rm = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=32,
                                                  n_positions=512, num_labels=1, pad_token_id=tok.pad_token_id,
                                                  eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
    rm.save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)

    rows = []  # GSM8K style: a question and a worked solution ending in `#### N`
    for i, name in enumerate(NAMES):
        a, b = i % 3, 1 + i % 2
        answer = 1 + i % 2
        rows.append({"question": f"{name} has {a + answer} pens and gives {a} away. How many are left?",
                     "answer": f"{name} keeps {a + answer} - {a} = <<{a + answer}-{a}={answer}>>{answer}.\n#### {answer}",
                     "level": "easy" if b == 1 else "hard"})
    jsonl = root / "gsm8k_train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet = root / "math.parquet"
    Dataset.from_list([{"problem": f"Compute {k}/{2 * k}.", "solution": r"$\boxed{\frac{1}{2}}$"}
                       for k in range(1, 9)]).to_parquet(str(parquet))
    chat = root / "chat_disk"
    messages = lambda q: [{"role": "user", "content": q}, {"role": "assistant", "content": "ignored"}]
    DatasetDict({
        "train": Dataset.from_list([{"messages": messages(f"Say {w}."), "ref": w} for w in "abcdefgh"]),
        "test": Dataset.from_list([{"messages": messages(f"Spell {w}."), "ref": w} for w in "xyz"]),
    }).save_to_disk(str(chat))
    return {"model": model_dir, "rm": rm_dir, "jsonl": jsonl, "parquet": parquet, "chat": chat, "tok": tok}


def gsm8k_overrides(assets, *extra):
    return ["world=hf", f"world.model={assets['model']}", f"world.prompts.path={assets['jsonl']}",
            "world.prompts.field=question", "world.prompts.answer_field=answer", "world.prompts.eval_size=4",
            "world.reward.kind=gsm8k", "world.max_new_tokens=8", *extra]


def world_for(assets, tmp_path, overrides):
    return build_world(validate(compose(overrides)), tmp_path)


# ---------------------------------------------------------------- building from each local format
def test_builds_from_jsonl_with_field_mapping_and_chat_template(assets, tmp_path):
    world = world_for(assets, tmp_path, gsm8k_overrides(assets, "world.system_prompt=Be brief."))
    tok = world.tokenizer
    assert (len(world.train_prompts), len(world.eval_prompts)) == (8, 4)
    texts = [tok.decode(p) for p in world.train_prompts + world.eval_prompts]
    questions = {json.loads(line)["question"] for line in assets["jsonl"].read_text().splitlines()}
    for text in texts:  # token ids decode back to the templated prompt
        assert text.startswith("<bos>[system]Be brief.\n[user]") and text.endswith("\n[assistant]")
        assert text[len("<bos>[system]Be brief.\n[user]"):-len("\n[assistant]")] in questions
    assert set(map(tuple, world.train_prompts)).isdisjoint(map(tuple, world.eval_prompts))  # held out
    assert len(set(texts)) == len(NAMES)  # every prompt used once
    assert world.tasks == ("default",) and world.binary_tasks == {"default"}
    assert world.eos_token_id == tok.eos_token_id and world.pad_token_id == tok.pad_token_id
    assert str(world.policy_path) == str(assets["model"])
    again = world_for(assets, tmp_path, gsm8k_overrides(assets, "world.system_prompt=Be brief."))
    assert again.eval_prompts == world.eval_prompts  # the held-out split is seeded by world.build_seed
    other = world_for(assets, tmp_path, gsm8k_overrides(assets, "world.system_prompt=Be brief.", "world.build_seed=1"))
    assert other.eval_prompts != world.eval_prompts


def test_builds_from_parquet_raw_text_with_task_and_limit(assets, tmp_path):
    world = world_for(assets, tmp_path, [
        "world=hf", f"world.model={assets['model']}", f"world.prompts.path={assets['parquet']}",
        "world.prompts.field=problem", "world.prompts.answer_field=solution", "world.reward.kind=math_verify",
        "world.chat_template=false", "world.prompts.eval_size=2", "world.prompts.limit=3", "world.prompts.task=math"])
    assert (len(world.train_prompts), len(world.eval_prompts)) == (3, 2)
    assert all(world.tokenizer.decode(p).startswith("Compute ") for p in world.train_prompts)  # raw text
    assert world.tasks == ("math",) and world.train_tasks == ["math"] * 3 and world.binary_tasks == {"math"}


def test_builds_from_save_to_disk_with_chat_messages_and_an_eval_split(assets, tmp_path):
    world = world_for(assets, tmp_path, [
        "world=hf", f"world.model={assets['model']}", f"world.prompts.path={assets['chat']}",
        "world.prompts.field=messages", "world.prompts.answer_field=ref", "world.prompts.eval_split=test",
        "world.reward.kind=math_verify", "world.prompts.task_field=ref"])
    decode = world.tokenizer.decode
    assert sorted(decode(p) for p in world.eval_prompts) == [f"<bos>[user]Spell {w}.\n[assistant]" for w in "xyz"]
    assert sorted(decode(p) for p in world.train_prompts) == [f"<bos>[user]Say {w}.\n[assistant]" for w in "abcdefgh"]
    assert world.tasks == tuple("abcdefghxyz")  # task_field: one family per row here


def test_long_prompts_are_dropped_with_a_warning(assets, tmp_path):
    with pytest.warns(UserWarning, match=r"dropped \d+ prompt\(s\) longer than world.max_prompt_tokens=69"):
        world = world_for(assets, tmp_path, gsm8k_overrides(assets, "world.max_prompt_tokens=69"))
    assert all(len(p) <= 69 for p in world.train_prompts + world.eval_prompts)


# ---------------------------------------------------------------- the gold labeller
def responses_tensor(tok, texts):
    ids = [tok.encode(t, add_special_tokens=False) + [tok.eos_token_id] for t in texts]
    width = max(map(len, ids))
    tokens = torch.full((len(ids), width), tok.pad_token_id)
    mask = torch.zeros(len(ids), width, dtype=torch.bool)
    for i, row in enumerate(ids):
        tokens[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), True
    return tokens, mask


def test_gold_maps_prompt_ids_back_to_their_answers(assets, tmp_path):
    world = world_for(assets, tmp_path, gsm8k_overrides(assets))
    tok = world.tokenizer
    answers = {json.loads(line)["question"]: json.loads(line)["answer"].split("#### ")[1]
               for line in assets["jsonl"].read_text().splitlines()}
    prompts = sorted(world.train_prompts, key=len)[::len(world.train_prompts) - 1][:2]  # two different lengths
    assert len(prompts[0]) != len(prompts[1])
    right = [answers[tok.decode(p)[len("<bos>[user]"):-len("\n[assistant]")]] for p in prompts]
    ids, mask = left_pad(prompts, world.pad_token_id)
    assert mask is not None
    wrong = str(int(right[1]) + 5)
    responses, response_mask = responses_tensor(tok, [f"I think it is {right[0]}", f"#### {wrong}"])
    assert world.gold(ids, mask, responses, response_mask, ["default"] * 2).tolist() == [1.0, 0.0]
    # the same prompts with the answers swapped round: the labeller follows the prompt, not the row
    responses, response_mask = responses_tensor(tok, [f"#### {int(right[0]) + 5}", f"so {right[1]}"])
    assert world.gold(ids, mask, responses, response_mask, ["default"] * 2).tolist() == [0.0, 1.0]


def test_reward_model_gold_is_batched_and_finite(assets, tmp_path):
    world = world_for(assets, tmp_path, gsm8k_overrides(assets, "world.reward.kind=model",
                                                        f"world.reward.model={assets['rm']}",
                                                        "world.reward.batch_size=3"))
    assert world.binary_tasks == frozenset()
    prompts = world.eval_prompts[:2] * 2
    ids, mask = left_pad(prompts, world.pad_token_id)
    responses, response_mask = responses_tensor(world.tokenizer, ["1", "2 2", "1", "2 2"])
    r = world.gold(ids, mask, responses, response_mask, ["default"] * 4)
    assert r.shape == (4,) and torch.isfinite(r).all()
    assert r[:2].tolist() == pytest.approx(r[2:].tolist(), abs=1e-5)  # batching does not change a score
    assert r[0] != r[1]


# ---------------------------------------------------------------- end to end through the one loop
@pytest.mark.parametrize("algo", ["dpo", "ipo", "best_of_2", "grpo", "reinforce", "kto", "simpo", "orpo", "rwr", "sft"])
@pytest.mark.parametrize("sync", ["1", "inf"])
def test_every_algorithm_and_regime_runs_end_to_end(assets, tmp_path, algo, sync):
    overrides = gsm8k_overrides(assets, f"algo={algo}", f"sync_every={sync}", "steps=2", "batch_size=4")
    run_dir, final, records = train_run(tmp_path, overrides, fast=FAST)
    losses = series(records, "train/loss")
    assert len(losses) == 2 and [type(x) for x in losses] == [float] * 2, losses  # NaN is logged as null
    assert [math.isfinite(x) for x in losses] == [True] * 2, losses
    # the gsm8k verifier's gold is 0 or 1 on every prompt: accuracy is the gold reward's mean, not just any fraction
    assert final["eval/accuracy"] == pytest.approx(final["eval/gold_reward"], abs=1e-6)
    assert math.isfinite(final["eval/kl"])  # (2 steps at the default lr move this policy by ~1e-8 nats: no more)
    assert (run_dir / "final.json").exists()


def test_replay_and_dataset_regimes_run_end_to_end(assets, tmp_path):
    """The other two data regimes on a real-model world: the online run's pair log replayed (in order it reproduces
    the run), and a fixed preference dataset of text pairs in a local jsonl."""
    common = ["steps=2", "batch_size=4", "lr=0.01"]  # a step large enough to move the policy measurably
    online_dir, online, _ = train_run(tmp_path, gsm8k_overrides(assets, *common), fast=FAST)
    replay_dir, replayed, _ = train_run(tmp_path, gsm8k_overrides(assets, *common, "data=replay",
                                                                  f"data.path={online_dir}"), fast=FAST)
    assert replay_dir != online_dir and online["eval/kl"] > 1e-3
    assert replayed["eval/kl"] == pytest.approx(online["eval/kl"], rel=1e-4)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "chosen": f" {i + 1}",
                                         "rejected": f" {i + 2}"}) + "\n" for i in range(6)))
    dataset_overrides = gsm8k_overrides(assets, "steps=2", "batch_size=2", "data=dataset", f"data.path={pairs}")
    dataset_dir, _, records = train_run(tmp_path, dataset_overrides, fast=FAST)
    losses = series(records, "train/loss")
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # text prompts of a preference dataset are rendered as the policy sees prompts: with the chat template
    from gapstudy.data.pair_log import read_pair_log

    world = world_for(assets, tmp_path, dataset_overrides)
    templated = {tuple(world.encode_prompt(f"What is {i} + 1?")) for i in range(6)}
    logged = {tuple(row["prompt"]) for batch in read_pair_log(dataset_dir) for row in batch}
    assert logged and logged <= templated
    assert world.tokenizer.decode(next(iter(logged))).startswith("<bos>[user]What is")


def test_reward_model_run_end_to_end(assets, tmp_path):
    overrides = gsm8k_overrides(assets, "world.reward.kind=model", f"world.reward.model={assets['rm']}",
                                "world.prompts.answer_field=null", "steps=2", "batch_size=2")
    run_dir, final, records = train_run(tmp_path, overrides, fast=FAST)
    losses = series(records, "train/loss")
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert "eval/accuracy" not in final and math.isfinite(final["eval/gold_reward"])


def test_proxy_labeller_trains_a_reward_model_from_a_stock_classification_head(assets, tmp_path):
    # GPT-2's classification head has no bias: the proxy RM trainer must not assume one
    overrides = gsm8k_overrides(assets, "world.reward.kind=model", f"world.reward.model={assets['rm']}",
                                "world.prompts.answer_field=null", "labeller=proxy", "proxy.pairs=16",
                                "proxy.epochs=1", "proxy.batch_size=8", "steps=2", "batch_size=2")
    _, final, records = train_run(tmp_path, overrides, fast=FAST)
    assert [math.isfinite(x) for x in series(records, "train/loss")] == [True] * 2  # both steps trained
    assert math.isfinite(final["eval/proxy_reward"])


# ---------------------------------------------------------------- bad input
def test_bad_settings_name_the_value_and_the_choices(assets, tmp_path):
    with pytest.raises(ConfigError, match=r"world.reward.kind='bleu' is invalid; valid choices: math_verify, gsm8k, model"):
        validate(compose(gsm8k_overrides(assets, "world.reward.kind=bleu")))
    with pytest.raises(ConfigError, match=r"world.chat_template='maybe' is invalid; valid choices: auto, true, false"):
        validate(compose(gsm8k_overrides(assets, "world.chat_template=maybe")))
    with pytest.raises(ConfigError, match="needs world.prompts.answer_field"):
        validate(compose(gsm8k_overrides(assets, "world.prompts.answer_field=null")))
    with pytest.raises(ConfigError, match="needs world.reward.model"):
        validate(compose(gsm8k_overrides(assets, "world.reward.kind=model")))
    with pytest.raises(ConfigError, match="missing required setting"):
        validate(compose(["world=hf"]))
    with pytest.raises(ConfigError, match="does not exist"):
        validate(compose(gsm8k_overrides(assets, f"world.prompts.path={tmp_path}/nope.jsonl")))
    with pytest.raises(ConfigError, match=r"world.prompts.field='prompt' is not a column of .*; available columns: "
                                          r"question, answer, level"):
        world_for(assets, tmp_path, gsm8k_overrides(assets, "world.prompts.field=prompt"))
    with pytest.raises(ConfigError, match=r"world.prompts.split='validation' is not a split of .*valid choices: "
                                          r"train, test"):
        world_for(assets, tmp_path, ["world=hf", f"world.model={assets['model']}", f"world.prompts.path={assets['chat']}",
                                     "world.prompts.field=messages", "world.prompts.split=validation",
                                     "world.prompts.answer_field=ref", "world.reward.kind=math_verify"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        world_for(assets, tmp_path, gsm8k_overrides(assets, f"world.prompts.path={empty}"))
    with pytest.raises(ConfigError, match="eval_size=12 leaves no training prompts"):
        world_for(assets, tmp_path, gsm8k_overrides(assets, "world.prompts.eval_size=12"))


def test_eval_tasks_take_the_families_a_task_field_names(assets, tmp_path):
    """eval.tasks may name families that exist only in the data (task_field); unknown ones fail before any run dir."""
    chat = ["world=hf", f"world.model={assets['model']}", f"world.prompts.path={assets['chat']}",
            "world.prompts.field=messages", "world.prompts.answer_field=ref", "world.prompts.eval_split=test",
            "world.reward.kind=math_verify", "world.prompts.task_field=ref", "world.max_new_tokens=4",
            "steps=1", "batch_size=2"]
    _, final, _ = train_run(tmp_path, [*chat, "eval.tasks=[x,z]"], fast=FAST)
    assert {k.split("/")[1] for k in final if k.count("/") == 2} == {"x", "z"}  # y is not evaluated
    with pytest.raises(ConfigError, match=r"eval.tasks: nope not among this world's prompt families; valid: a, b"):
        train_run(tmp_path / "bad", [*chat, "eval.tasks=[x,nope]"], fast=FAST)
    assert not (tmp_path / "bad").exists() or not any(p.name != ".cache" for p in (tmp_path / "bad").iterdir())
