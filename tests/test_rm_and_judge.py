"""`gapstudy train-rm` (a Bradley-Terry reward model on a preference dataset, then `labeller=proxy proxy.path=`)
and `labeller=judge` (a pairwise LLM judge judged in both orders; inconsistent verdicts are ties).

Everything is made here, offline, with test_hf_world's character-level tokenizer, tiny GPT-2 policy and GSM8K-style
prompts; the judge's unit tests use a stub model whose verdicts are plain Python rules.
"""
from __future__ import annotations

import json
import math
import random
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import series, train_run
from gapstudy import cli, rewards, train_rm
from gapstudy.config import ConfigError, compose
from gapstudy.generation import left_pad
from gapstudy.judge import TEMPLATE, PairwiseJudge
from gapstudy.runs import validate
from test_hf_world import FAST, assets, gsm8k_overrides, make_tokenizer, responses_tensor  # noqa: F401 (fixture)


def run_cli(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err


# ---------------------------------------------------------------- (a) the Bradley-Terry loss and step
def test_bradley_terry_loss_value_and_gradient_direction():
    chosen = torch.tensor([0.0, 2.0, -1.0], requires_grad=True)
    rejected = torch.tensor([0.0, 0.0, 1.0], requires_grad=True)
    loss = rewards.bradley_terry_loss(chosen, rejected)
    expected = (math.log(2) + math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert rewards.bradley_terry_loss(torch.zeros(1), torch.zeros(1)).item() == pytest.approx(math.log(2))
    loss.backward()
    # descent raises the chosen reward and lowers the rejected one, most where the pair is ranked wrong
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
    assert torch.allclose(chosen.grad, -torch.sigmoid(-(chosen - rejected)).detach() / 3)
    assert torch.allclose(chosen.grad, -rejected.grad)
    assert chosen.grad[2].abs() > chosen.grad[0].abs() > chosen.grad[1].abs()


def test_the_step_lowers_the_loss_and_train_proxy_uses_it(assets, tmp_path, monkeypatch):
    from gapstudy.worlds import build_world

    rm = rewards.load_reward_model(assets["model"], "cpu")
    assert rm.score.weight.abs().sum() == 0  # a fresh head starts every pair at margin 0, loss log 2
    tok = assets["tok"]
    prompts, mask = left_pad([tok.encode("<bos>Q"), tok.encode("<bos>Qq")] * 2, tok.pad_token_id)
    responses, response_mask = responses_tensor(tok, ["ok!", "no!", "ok.", "no."])  # chosen rows first
    batch = (prompts, mask, responses, response_mask)
    opt = torch.optim.Adam(rm.parameters(), lr=1e-2)
    first = rewards.bradley_terry_step(rm, opt, *batch)
    assert first == pytest.approx(math.log(2), abs=1e-6)
    for _ in range(5):
        last = rewards.bradley_terry_step(rm, opt, *batch)
    assert last < first and rewards.pair_accuracy(rm, [batch]) == 1.0
    rm.eval()
    with torch.no_grad():  # a score does not depend on the left padding its batch needed
        together = rewards.score(rm, *batch)
        alone = torch.cat([rewards.score(rm, prompts[i : i + 1, mask[i].bool()], None, responses[i : i + 1],
                                         response_mask[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)

    calls = []
    step = rewards.bradley_terry_step
    monkeypatch.setattr(rewards, "bradley_terry_step", lambda *a: calls.append(1) or step(*a))
    cfg = validate(compose(gsm8k_overrides(assets, "world.reward.kind=model", f"world.reward.model={assets['rm']}",
                                           "world.prompts.answer_field=null", "labeller=proxy", "proxy.pairs=8",
                                           "proxy.epochs=2", "proxy.batch_size=4", f"paths.results={tmp_path}")))
    path = rewards.train_proxy(build_world(cfg, tmp_path), cfg, tmp_path)
    info = json.loads((path / "proxy.json").read_text())
    assert len(calls) == 2 * math.ceil(info["train_pairs"] / 4) and info["held_out_pairs"] > 0


# ---------------------------------------------------------------- (b) train-rm end to end, then proxy.path
PREFERENCE_PAIRS, HELD_OUT = 160, 40  # rm.eval_fraction=0.25 holds out 40 pairs


def learned_the_preference(accuracy: float, n: int) -> bool:
    """Held-out pair accuracy significantly above chance (one-sided binomial test against 1/2, p < 0.001: at least 31
    of 40 pairs). A model that did not learn the marker ranks about half the pairs right (an untrained head ties
    every pair, 0.5); 12 pairs against a fixed 0.9 was one pair from failing on a machine with other numerics."""
    from scipy.stats import binomtest

    right = round(accuracy * n)  # ties count 1/2 in the accuracy: round them either way, at most one pair
    return binomtest(right, n, 0.5, alternative="greater").pvalue < 1e-3


@pytest.fixture(scope="module")
def preferences(tmp_path_factory):
    """A jsonl preference dataset whose chosen responses end in '!!', the rejected ones in '..'."""
    rng = random.Random(0)
    rows = []
    for i in range(PREFERENCE_PAIRS):
        stem = "".join(rng.choice("abcdef") for _ in range(rng.randint(1, 4)))
        other = "".join(rng.choice("abcdef") for _ in range(rng.randint(1, 4)))
        rows.append({"question": f"Q{i % 7}: say {stem}", "good": f"{other}!!", "bad": f"{other}.."})
    path = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained_rm(assets, preferences, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "marker_rm"
    argv = ["train-rm", "world=hf", f"world.model={assets['model']}", f"data.path={preferences}",
            "data.prompt_field=question", "data.chosen_field=good", "data.rejected_field=bad", f"rm.out={out}",
            "rm.epochs=4", "rm.lr=0.003", "rm.batch_size=8", "rm.eval_fraction=0.25", "device=cpu",
            f"paths.results={out.parent}"]  # the dataset cache (.cache/datasets) lands here, not in ./results
    return out, argv


def test_train_rm_learns_the_preference_and_saves_a_loadable_model(trained_rm, capsys):
    out, argv = trained_rm
    cli.main(argv)
    stdout = capsys.readouterr().out
    epochs = re.findall(r"epoch (\d)/4  train_loss=([\d.]+)  held_out_accuracy=([\d.]+)", stdout)
    assert [e[0] for e in epochs] == ["1", "2", "3", "4"]
    assert float(epochs[-1][1]) < math.log(2)
    info = json.loads((out / "rm_info.json").read_text())
    assert (info["pairs"], info["train_pairs"], info["held_out_pairs"]) == (PREFERENCE_PAIRS,
                                                                          PREFERENCE_PAIRS - HELD_OUT, HELD_OUT)
    assert info["accuracy"] == pytest.approx(float(epochs[-1][2]), abs=1e-3)
    assert learned_the_preference(info["accuracy"], info["held_out_pairs"]), info["history"]
    assert info["command"].startswith("gapstudy train-rm world=hf") and len(info["history"]) == 4
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).exists(), name
    assert str(out) in stdout


def test_train_rm_renders_text_prompts_with_the_worlds_chat_template(assets, preferences, tmp_path):
    from gapstudy.data.preference import read_preference_rows

    cfg = compose(["data=dataset", "world=hf", f"world.model={assets['model']}", f"data.path={preferences}",
                   "data.prompt_field=question", "data.chosen_field=good", "data.rejected_field=bad"])
    tok, encode, eos, pad, policy = train_rm._rm_tokenizer(cfg)
    row = read_preference_rows(cfg.data, tok, eos, encode, str(tmp_path / "cache"))[0]
    assert tok.decode(row["prompt"]).startswith("<bos>[user]Q0: say ") and tok.decode(row["prompt"]).endswith(
        "\n[assistant]")
    assert row["chosen"][-1] == eos and tok.decode(row["chosen"][:-1]).endswith("!!")
    assert policy == str(assets["model"])


def test_a_trained_rm_labels_a_run_through_proxy_path_without_training_another(assets, trained_rm, tmp_path,
                                                                               monkeypatch, capsys):
    out, argv = trained_rm
    if not (out / "rm_info.json").exists():  # this test alone: train it first
        cli.main(argv)
        capsys.readouterr()

    def no_training(*args, **kwargs):
        raise AssertionError("proxy.path is set: no proxy may be trained")

    monkeypatch.setattr(rewards, "train_proxy", no_training)
    # a gold reward model, not the 0/1 verifier: on verifier tasks the pair builder applies correct-vs-incorrect at
    # 0.5 to the proxy's scores too and skipped every prompt here, so no step trained (the old all() hid it)
    overrides = gsm8k_overrides(assets, "world.reward.kind=model", f"world.reward.model={assets['rm']}",
                                "world.prompts.answer_field=null", "labeller=proxy", f"proxy.path={out}", "steps=2",
                                "batch_size=2")
    run_dir, final, records = train_run(tmp_path, overrides, fast=FAST)
    assert (run_dir / "final.json").exists() and math.isfinite(final["eval/proxy_reward"])
    assert [math.isfinite(x) for x in series(records, "train/loss")] == [True] * 2  # both steps trained
    assert not list((tmp_path / ".cache").glob("proxy_*"))
    # the labeller the run used scores like the trained model: the marker wins on an unseen templated prompt
    from gapstudy.worlds import build_world

    cfg = validate(compose(overrides))
    world = build_world(cfg, tmp_path)
    proxy, for_eval = rewards.make_labeller(cfg, world, tmp_path)
    assert proxy is for_eval and learned_the_preference(proxy.info["accuracy"], proxy.info["held_out_pairs"])
    tok = world.tokenizer
    prompts, mask = left_pad([world.eval_prompts[0]] * 2 + [world.train_prompts[0]] * 2, tok.pad_token_id)
    responses, response_mask = responses_tensor(tok, ["cab!!", "cab..", "fed..", "fed!!"])
    r = proxy(prompts, mask, responses, response_mask)
    assert r[0] > r[1] and r[3] > r[2]


# ---------------------------------------------------------------- (c) the judge, with a stub model
class StubJudgeModel(torch.nn.Module):
    """Reads the rendered judge prompt back to text and puts a logit of 1 on the verdict `rule(a, b)` returns."""

    def __init__(self, tok, rule):
        super().__init__()
        self.tok, self.rule, self.seen = tok, rule, []
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # for the device

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        logits = torch.zeros(input_ids.shape[0], 1, len(self.tok))
        for i, (ids, mask) in enumerate(zip(input_ids, attention_mask.bool())):
            text = self.tok.decode(ids[mask].tolist())
            self.seen.append(text)
            a, b = re.search(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nWhich response", text, re.S).groups()
            logits[i, -1, self.tok.convert_tokens_to_ids(self.rule(a, b))] = 1.0
        return SimpleNamespace(logits=logits)


def marker_rule(a: str, b: str) -> str:
    """Prefers the response holding '!'; with no difference it says A (position bias)."""
    return "B" if "!" in b and "!" not in a else "A"


def judge_rewards(rule, prompt_texts, responses, n, batch_size=3):
    tok = make_tokenizer()
    model = StubJudgeModel(tok, rule)
    judge = PairwiseJudge(model, tok, tok, batch_size=batch_size, samples_per_prompt=n)
    ids, mask = left_pad([tok.encode(p) for p in prompt_texts for _ in range(n)], tok.pad_token_id)
    resp, resp_mask = responses_tensor(tok, responses)
    return judge(ids, mask, resp, resp_mask, ["default"] * len(responses)).tolist(), model.seen


def test_a_consistent_judge_gives_one_and_zero_in_either_row_order():
    scores, seen = judge_rewards(marker_rule, ["<bos>Short?", "<bos>A longer prompt?"], ["x!", "y", "z", "w!"], 2)
    assert scores == [1.0, 0.0, 0.0, 1.0]
    assert len(seen) == 4  # each pair twice: (a, b) and (b, a)
    for text in seen:  # the judge tokenizer's chat template around the filled template; no padding, no <bos>
        assert text.startswith("<bos>[user]Which of the two responses") and text.endswith("\n[assistant]")
    assert "[Prompt]\nShort?\n\n[Response A]\nx!\n\n[Response B]\ny\n\n" in seen[0]
    assert "[Prompt]\nA longer prompt?\n\n[Response A]\nw!\n\n[Response B]\nz\n\n" in seen[3]  # swapped order


def test_a_position_biased_judge_gives_only_ties():
    scores, _ = judge_rewards(lambda a, b: "A", ["<bos>Short?", "<bos>A longer prompt?"], ["x!", "y", "z", "w!"], 2)
    assert scores == [0.5, 0.5, 0.5, 0.5]  # 'always A' contradicts itself once the order is swapped
    scores, _ = judge_rewards(lambda a, b: "B", ["<bos>Q?"], ["x!", "y"], 2)
    assert scores == [0.5, 0.5]


def test_three_samples_score_wins_plus_half_ties_over_the_two_others():
    scores, seen = judge_rewards(marker_rule, ["<bos>Q?"], ["a!", "b", "c!"], 3, batch_size=4)
    # 0 beats 1; 0 vs 2 both hold the marker: 'A' both ways, a tie; 2 beats 1
    assert scores == pytest.approx([0.75, 0.0, 0.75])
    assert len(seen) == 6  # 3 pairs x 2 orders
    scores, _ = judge_rewards(lambda a, b: "A", ["<bos>Q?"], ["a!", "b", "c!"], 3)
    assert scores == [0.5, 0.5, 0.5]


def test_judge_settings_are_checked():
    tok = make_tokenizer()
    model = StubJudgeModel(tok, marker_rule)
    with pytest.raises(ConfigError, match=r"judge.tokens=\['A', 'A'\]: their first tokens must differ"):
        PairwiseJudge(model, tok, tok, tokens=("A", "A"))
    with pytest.raises(ConfigError, match=r"judge.template lacks \{response_b\}"):
        PairwiseJudge(model, tok, tok, template="{prompt} {response_a}")
    assert compose([]).judge.template == TEMPLATE  # the documented default is the configured one


# ---------------------------------------------------------------- (d) runs labelled by tiny local judges
@pytest.fixture(scope="module")
def judge_dir(assets, tmp_path_factory):
    """A randomly initialised GPT-2: its verdict hardly depends on the texts, so its pairs are mostly ties."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = assets["tok"]
    torch.manual_seed(3)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=32, n_positions=512,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                       pad_token_id=tok.pad_token_id))
    path = tmp_path_factory.mktemp("judge") / "gpt2_judge"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _marker_judge_classes():
    """A transformers causal LM, registered with the Auto classes, whose verdict is a rule: the response with more
    '1's wins, and equal counts say A (position bias). Saved and loaded by path like any judge."""
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

    class MarkerJudgeConfig(PretrainedConfig):
        model_type = "gapstudy_test_marker_judge"

        def __init__(self, vocab=(), **kwargs):
            self.vocab = list(vocab)
            super().__init__(**kwargs)

    class MarkerJudge(PreTrainedModel):
        config_class = MarkerJudgeConfig

        def __init__(self, config):
            super().__init__(config)
            self.anchor = torch.nn.Parameter(torch.zeros(1))
            self.post_init()

        def _init_weights(self, module):
            pass

        def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **kwargs):
            vocab = self.config.vocab
            logits = torch.zeros(input_ids.shape[0], 1, len(vocab))
            for i, ids in enumerate(input_ids.tolist()):
                text = "".join(vocab[t] for t, m in zip(ids, attention_mask[i].tolist()) if m)
                a, b = re.search(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nWhich response", text,
                                 re.S).groups()
                logits[i, -1, vocab.index("B" if b.count("1") > a.count("1") else "A")] = 1.0
            return SimpleNamespace(logits=logits)

    AutoConfig.register(MarkerJudgeConfig.model_type, MarkerJudgeConfig)
    AutoModelForCausalLM.register(MarkerJudgeConfig, MarkerJudge)
    return MarkerJudgeConfig, MarkerJudge


@pytest.fixture(scope="module")
def marker_judge_dir(assets, tmp_path_factory):
    config_class, model_class = _marker_judge_classes()
    tok = assets["tok"]
    vocab = [tok.convert_ids_to_tokens(i) for i in range(len(tok))]
    path = tmp_path_factory.mktemp("judge") / "marker_judge"
    model_class(config_class(vocab=vocab)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_judge_margins_do_not_depend_on_batching(assets, judge_dir):
    from transformers import AutoModelForCausalLM

    tok = assets["tok"]
    judge = PairwiseJudge(AutoModelForCausalLM.from_pretrained(judge_dir).eval(), tok, tok, batch_size=8)
    texts = [judge.render("Hi?", "1", "2 2"), judge.render("A much longer question, really?", "1 1 1 1", "")]
    together = judge.margins(texts)
    alone = torch.cat([judge.margins(texts[:1]), judge.margins(texts[1:])])
    assert torch.allclose(together, alone, atol=1e-5) and (together != 0).all()


@pytest.mark.parametrize("kind", ["random_gpt2", "marker"])
def test_a_run_labelled_by_a_local_judge_trains_or_skips_ties(assets, judge_dir, marker_judge_dir, tmp_path, kind):
    path = judge_dir if kind == "random_gpt2" else marker_judge_dir
    overrides = gsm8k_overrides(assets, "labeller=judge", f"judge.model={path}", "steps=2", "batch_size=4",
                                "judge.batch_size=4")
    run_dir, final, records = train_run(tmp_path, overrides, fast=FAST)
    assert (run_dir / "final.json").exists() and math.isfinite(final["eval/gold_reward"])
    steps = [r for r in records if "train/examples" in r]
    assert [r["step"] for r in steps] == [0, 1]
    for r in steps:  # each of the 4 prompts' pair is trained on or skipped as a tie; a step with pairs has a loss
        assert r["train/examples"] + r["train/skipped"] == 4, r
        assert ("train/loss" in r) == (r["train/examples"] > 0), r
        if r["train/examples"]:
            assert math.isfinite(r["train/loss"]), r
    import pyarrow.parquet as pq

    pairs = [row for shard in sorted((run_dir / "pairs").glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]
    assert len(pairs) == sum(r["train/examples"] for r in steps)  # the pair log holds exactly the trained pairs
    assert [(row["chosen_reward"], row["rejected_reward"]) for row in pairs] == [(1.0, 0.0)] * len(pairs)  # n = 2
    if kind == "random_gpt2":  # a verdict that hardly depends on the texts contradicts itself once swapped: ties
        assert sum(r["train/skipped"] for r in steps) > sum(r["train/examples"] for r in steps), steps
    if kind == "marker":  # the rule decides some pairs, and the winner is always the response with more '1's
        tok = assets["tok"]
        assert pairs
        assert [tok.decode(r["chosen"]).count("1") > tok.decode(r["rejected"]).count("1") for r in pairs] == \
            [True] * len(pairs)


# ---------------------------------------------------------------- (e) bad input
def test_bad_labeller_settings_name_the_value(assets, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"labeller='llm' is invalid; valid choices: gold, proxy, judge"):
        validate(compose(gsm8k_overrides(assets, "labeller=llm")))
    with pytest.raises(ConfigError, match=r"labeller=judge needs judge.model"):
        validate(compose(gsm8k_overrides(assets, "labeller=judge")))
    with pytest.raises(ConfigError, match=r"judge.model='/nonexistent/judge' does not exist"):
        validate(compose(gsm8k_overrides(assets, "labeller=judge", "judge.model=/nonexistent/judge")))
    with pytest.raises(ConfigError, match=r"judge.template lacks \{prompt\}"):
        validate(compose(gsm8k_overrides(assets, "labeller=judge", f"judge.model={assets['model']}",
                                         "judge.template='A: {response_a} B: {response_b}'")))
    missing = tmp_path / "no_such_rm"
    code, err = run_cli(["run", f"paths.results={tmp_path}", *gsm8k_overrides(assets, "labeller=proxy",
                                                                             f"proxy.path={missing}")], capsys)
    assert code == 2 and err.strip() == f"gapstudy: error: proxy.path='{missing}' does not exist"
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(ConfigError, match=r"proxy.path='.*not_a_model' is not a reward model directory"):
        train_run(tmp_path, gsm8k_overrides(assets, "labeller=proxy", f"proxy.path={tmp_path / 'not_a_model'}",
                                            "steps=1"), fast=FAST)


def test_bad_train_rm_input_stops_with_one_line(assets, preferences, tmp_path, capsys):
    base = ["train-rm", "world=hf", f"world.model={assets['model']}", f"paths.results={tmp_path}"]
    cases = [
        ([], "train-rm needs data.path (give it as data.path=...)"),
        ([f"data.path={preferences}"], "train-rm needs rm.out (give it as rm.out=...)"),
        ([f"data.path={tmp_path}/none.jsonl", f"rm.out={tmp_path}/o"], f"data.path='{tmp_path}/none.jsonl' does not exist"),
        ([f"data.path={preferences}", f"rm.out={tmp_path}/o"], "lacks field(s) prompt, chosen, rejected"),
        ([f"data.path={preferences}", f"rm.out={tmp_path}/o", "rm.eval_fraction=1"], "rm.eval_fraction=1 is invalid"),
        (["data=policy"], "data='policy' is invalid; valid choices: dataset"),
    ]
    for extra, needle in cases:
        code, err = run_cli([*base, *extra], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "o").exists()
