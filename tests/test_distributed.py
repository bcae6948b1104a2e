"""Data parallelism: a 2-process run (torchrun, gloo on the CPU) trains on the same global batch as a 1-process
run and logs the same metrics, to float noise, with the policy replicated (ddp) or sharded (fsdp); only rank 0
writes, and a sharded run resumes from its checkpoint exactly."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import read

COMMON = ["world=token_bandit", "world.pretrain_steps=60", "steps=6", "eval.every=3", "eval.prompts=16",
          "batch_size=8", "checkpoint_every=0", "progress=false", "seed=3"]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _run(prefix: list[str], overrides: list[str], root, entry=("-m", "gapstudy.cli"), ok=True) -> None:
    done = subprocess.run([*prefix, *entry, "run", *overrides, f"paths.results={root}"],
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode == 0) == ok, done.stderr[-3000:]


def _only_run(root):
    (run,) = [p for p in root.iterdir() if p.name != ".cache"]
    return run


def _assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert [sorted(r) for r in a] == [sorted(r) for r in b]  # the same metric keys at every step
    compared = 0
    for ra, rb in zip(a, b):
        for key, value in ra.items():
            if key == "time/seconds":
                continue
            assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (ra["step"], key)
            compared += 1
    assert compared > 50


@pytest.mark.parametrize("algo, parallel, batch", [("dpo", "ddp", 8), ("grpo", "ddp", 8), ("grpo", "fsdp", 8),
                                                   ("dpo", "fsdp", 1)])
def test_two_processes_match_one_process_with_the_same_global_batch(algo, parallel, batch, tmp_path):
    """batch=1 gives one pair per step: rank 1's shard is empty and it still joins FSDP's collectives."""
    overrides = [*COMMON, f"algo={algo}", f"parallel={parallel}", f"batch_size={batch}"]
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable], overrides, one)
    shutil.copytree(one / ".cache", two / ".cache")  # the same built world
    _run(TORCHRUN, overrides, two)
    run_one = _only_run(one)
    run_two = two / run_one.name
    _assert_same_metrics(read(run_one), read(run_two))
    assert len(list(run_two.glob("pairs/*.parquet"))) == len(list(run_one.glob("pairs/*.parquet")))  # rank 0 only


CRASH_AFTER_FIRST_CHECKPOINT = """
import sys
import gapstudy.checkpoint as checkpoint
from gapstudy.cli import main

save = checkpoint.save_state
def save_then_crash(*args, **kwargs):
    save(*args, **kwargs)
    raise SystemExit(3)  # rank 0 dies after writing state.pt; torchrun stops the other rank
checkpoint.save_state = save_then_crash
sys.exit(main())
"""


def test_a_sharded_run_resumes_from_its_checkpoint_exactly(tmp_path):
    overrides = [*(o for o in COMMON if not o.startswith("checkpoint_every")), "algo=dpo", "parallel=fsdp",
                 "checkpoint_every=3"]
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    _run(TORCHRUN, overrides, whole)
    shutil.copytree(whole / ".cache", crashed / ".cache")
    script = tmp_path / "crash.py"
    script.write_text(CRASH_AFTER_FIRST_CHECKPOINT)
    _run(TORCHRUN, overrides, crashed, entry=(str(script),), ok=False)
    run = _only_run(crashed)
    assert (run / "state.pt").exists() and not (run / "final.json").exists()
    _run(TORCHRUN, overrides, crashed)  # the same command resumes at step 3
    assert (run / "final.json").exists() and not (run / "state.pt").exists()
    _assert_same_metrics(read(_only_run(whole)), read(run))


def _tiny_causal_lm(arch: str, tok):
    """A stock transformers architecture, 2 blocks, lm_head tied to the embedding (as Qwen2.5-0.5B ties them)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
           "tie_word_embeddings": True}
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=32, n_positions=256, **ids))
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        **ids))  # grouped-query attention, like the presets' Qwen2.5


@pytest.mark.parametrize("arch, algo", [("gpt2", "dpo"), ("qwen2", "grpo")])
def test_fsdp_shards_a_transformers_model_with_tied_embeddings(arch, algo, tmp_path):
    """world=hf with a stock GPT-2 or Qwen2: sharded block by block over 2 processes, it trains and evaluates as the
    1-process run does, and saves a checkpoint whose embedding is still tied."""
    import json

    from transformers import AutoModelForCausalLM

    from tests.test_hf_world import make_tokenizer

    tok = make_tokenizer()
    model = _tiny_causal_lm(arch, tok)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    model.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"question": f"{a} + 1 = ?", "answer": f"#### {a + 1}"}) + "\n"
                               for a in range(12)))
    overrides = ["world=hf", f"world.model={tmp_path / 'policy'}", f"world.prompts.path={prompts}",
                 "world.prompts.field=question", "world.prompts.answer_field=answer", "world.prompts.eval_size=4",
                 "world.reward.kind=gsm8k", "world.max_new_tokens=6", "device=cpu", "steps=4", "eval.every=2",
                 "eval.prompts=4", "batch_size=4", "lr=0.01", f"algo={algo}", "checkpoint_every=0", "progress=false",
                 "parallel=fsdp"]
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable], overrides, one)
    _run(TORCHRUN, overrides, two)
    run_one = _only_run(one)
    a, b = read(run_one), read(two / run_one.name)
    _assert_same_metrics(a, b)
    assert a[-1]["eval/kl"] > 1e-3  # the policy moved, identically
    saved = AutoModelForCausalLM.from_pretrained(two / run_one.name / "checkpoint")
    assert saved.lm_head.weight is saved.get_input_embeddings().weight
