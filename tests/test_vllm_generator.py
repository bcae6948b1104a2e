"""The vLLM generator's wiring, against a stand-in engine with vLLM's documented surface (vLLM itself needs a
GPU): `LLM.generate([{"prompt_token_ids": ...}], SamplingParams(n, temperature, top_p, max_tokens, logprobs, seed,
...))` returning RequestOutputs whose `.outputs[j]` have `token_ids` and `logprobs` ({token: Logprob}), and the
engine's torch model reached at `llm_engine.model_executor.driver_worker.worker.model_runner.model` with
`load_weights(iterable of (name, tensor))`. What this cannot check: vLLM's own sampling and kernels."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch

from gapstudy import generation
from gapstudy.generation import VLLMGenerator, left_pad, sample
from gapstudy.logprobs import token_logps


@dataclass
class FakeSamplingParams:  # the fields gapstudy sets, with vLLM's names
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    logprobs: int | None = None
    seed: int | None = None
    ignore_eos: bool = False
    detokenize: bool = True


@dataclass
class Logprob:
    logprob: float


class EngineModel:
    """What vLLM's model exposes for weight sync: load_weights over (name, tensor) pairs, copied in place."""

    def __init__(self, model):
        self.model = model
        self.loads = 0

    def load_weights(self, weights):
        params = dict(self.model.named_parameters())
        for name, tensor in weights:
            if name in params:
                params[name].data.copy_(tensor)
        self.loads += 1


@dataclass
class FakeLLM:
    model: torch.nn.Module
    eos: int | None
    pad: int
    calls: list = field(default_factory=list)

    def __post_init__(self):
        self.inner = EngineModel(self.model)
        worker = SimpleNamespace(model_runner=SimpleNamespace(model=self.inner))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(worker=worker)))

    def generate(self, requests, params, use_tqdm=True):
        self.calls.append(params)
        g = torch.Generator().manual_seed(params.seed)
        ids, mask = left_pad([r["prompt_token_ids"] for r in requests], self.pad)
        s = sample(self.model, ids, mask, params.n, g, params.max_tokens, params.temperature, self.eos, self.pad)
        out = []
        for i in range(len(requests)):
            completions = []
            for j in range(params.n):
                row = i * params.n + j
                toks = s.responses[row][s.response_mask[row]].tolist()
                lps = s.logps[row][s.response_mask[row]].tolist()
                completions.append(SimpleNamespace(token_ids=toks, logprobs=[{t: Logprob(lp)} for t, lp in zip(toks, lps)]))
            out.append(SimpleNamespace(outputs=completions))
        return out


@pytest.fixture
def tiny():
    from gapstudy.model import TinyGPTConfig, TinyGPTForCausalLM

    torch.manual_seed(0)
    cfg = TinyGPTConfig(vocab_size=12, n_positions=32, n_embd=16, n_layer=1, n_head=2, pad_token_id=0, eos_token_id=1)
    return TinyGPTForCausalLM(cfg).eval()


def test_generate_matches_the_hf_layout_and_log_probs(tiny):
    engine = FakeLLM(copy.deepcopy(tiny), eos=1, pad=0)
    gen = VLLMGenerator(tiny, engine, FakeSamplingParams, max_new_tokens=6, temperature=1.0, eos_token_id=1,
                        pad_token_id=0)
    prompts, mask = left_pad([[2, 3, 4], [5, 6]], 0)
    s = gen.generate(prompts, mask, 3, torch.Generator().manual_seed(0))
    params = engine.calls[-1]
    assert (params.n, params.max_tokens, params.temperature, params.top_p, params.logprobs) == (3, 6, 1.0, 1.0, 0)
    assert s.responses.shape == (6, 6) and s.prompts.shape == (6, 3) and s.prompt_mask.shape == (6, 3)
    assert torch.equal(s.prompts[0], s.prompts[2]) and not torch.equal(s.prompts[2], s.prompts[3])  # grouped
    for row in range(6):  # mask covers the tokens up to and including EOS; padding after it
        n = int(s.response_mask[row].sum())
        assert (s.responses[row, n:] == 0).all()
        assert n == 6 or s.responses[row, n - 1] == 1
    exact = token_logps(tiny, s.prompts, s.prompt_mask, s.responses, s.response_mask)
    assert torch.allclose(s.logps, exact * s.response_mask, atol=1e-5)
    # a seed per call from the run's generator: the same generator state gives the same samples
    again = gen.generate(prompts, mask, 3, torch.Generator().manual_seed(0))
    assert torch.equal(again.responses, s.responses)


def test_sync_weights_pushes_the_policy_into_the_running_engine(tiny):
    engine = FakeLLM(copy.deepcopy(tiny), eos=1, pad=0)
    gen = VLLMGenerator(tiny, engine, FakeSamplingParams, 6, 1.0, 1, 0)
    assert engine.inner.loads == 1  # the policy's exact weights at start
    policy = copy.deepcopy(tiny)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5)
    engine_before = gen.engine
    gen.sync_weights(policy, version=7)
    assert gen.engine is engine_before and gen.version == 7 and engine.inner.loads == 2  # no reload
    for (name, mine), theirs in zip(engine.model.named_parameters(), policy.parameters()):
        assert torch.equal(mine, theirs), name


def test_an_engine_without_a_reachable_model_is_a_clear_error(tiny):
    class Opaque:
        def generate(self, *a, **k):
            raise AssertionError

    with pytest.raises(RuntimeError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        VLLMGenerator(tiny, Opaque(), FakeSamplingParams, 6, 1.0, 1, 0)


@pytest.mark.parametrize("sync_every", ["1", "3", "inf"])
def test_the_loop_runs_on_the_vllm_backend_and_syncs_every_s_steps(sync_every, results, monkeypatch):
    from tests.conftest import series, train_run

    from transformers import AutoModelForCausalLM

    engines, paths = [], []

    def fake_engine(model_path, gpu_memory_utilization, dtype, seed):
        paths.append(model_path)
        engines.append(FakeLLM(AutoModelForCausalLM.from_pretrained(model_path).eval(), eos=None, pad=0))
        return engines[-1], FakeSamplingParams

    monkeypatch.setattr(generation, "vllm_engine", fake_engine)
    _, final, records = train_run(results, ["generator=vllm", f"sync_every={sync_every}", "steps=6", "eval.every=0"])
    assert len(engines) == 1  # one engine for the whole run
    loads = engines[0].inner.loads
    assert loads == {"1": 1 + 6, "3": 1 + 2, "inf": 1}[sync_every]  # initial push + one per sync step
    assert series(records, "gen/staleness") == {"1": [0.0] * 6, "3": [0.0, 1.0, 2.0] * 2,
                                                "inf": [float(s) for s in range(6)]}[sync_every]
    # the engine samples with the weights it was last pushed: the initial ones only when it is never synced
    initial = dict(AutoModelForCausalLM.from_pretrained(paths[0]).named_parameters())
    engine = dict(engines[0].model.named_parameters())
    assert engine.keys() == initial.keys() and len(engine) > 0
    unchanged = [torch.equal(engine[name], initial[name]) for name in engine]
    assert all(unchanged) if sync_every == "inf" else not all(unchanged), unchanged
    assert final["eval/kl"] > 1e-6  # and the evaluated policy is the trained one, away from the reference


@pytest.mark.parametrize("sync_every, checkpoint_every, keeps_copy", [("1", "4", False), ("3", "4", True),
                                                                      ("2", "4", False), ("inf", "4", False)])
def test_a_resumed_vllm_run_matches_and_copies_weights_only_when_a_checkpoint_needs_them(
        sync_every, checkpoint_every, keeps_copy, results, monkeypatch):
    """The CPU copy of pushed weights exists only when a checkpoint can land between syncs (sync 3, checkpoints
    every 4); otherwise a resumed run re-syncs (or, offline, reloads the initial weights) and still matches."""
    from tests.conftest import crash_then_resume, train_run
    from tests.test_loop import assert_same_metrics

    gens = []
    original_init = VLLMGenerator.__init__

    def record(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        gens.append(self)

    monkeypatch.setattr(VLLMGenerator, "__init__", record)
    monkeypatch.setattr(generation, "vllm_engine", lambda path, *a: (FakeLLM(
        __import__("transformers").AutoModelForCausalLM.from_pretrained(path).eval(), eos=None, pad=0),
        FakeSamplingParams))
    root = results / f"vllm_resume_{sync_every}"
    common = ["generator=vllm", f"sync_every={sync_every}", f"checkpoint_every={checkpoint_every}", "steps=10",
              "eval.every=3", "seed=4"]
    _, _, whole = train_run(root / "whole", common)
    assert (gens[-1]._synced is not None) == keeps_copy
    _, resumed = crash_then_resume(root / "crashed", common, 6, monkeypatch)  # resumes at step 4
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    assert_same_metrics(whole, resumed, rel=1e-6)


def test_vllm_generator_without_vllm_installed_says_how_to_install(results):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r"gapstudy\[vllm\]"):
        generation.vllm_engine("x", 0.3, "auto", 0)
