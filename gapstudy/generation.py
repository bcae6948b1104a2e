"""The generator: the sampler's own copy of the policy weights, synced from the trained policy every s steps.

`Generator` is the interface every backend implements (`generate`, `sync_weights`, `version`); `HFGenerator` is
the CPU/CUDA backend over a transformers causal LM. For gapstudy's lean TinyGPT it uses the model's KV-cached
`sample`; for any other architecture it calls transformers' `generate` (with its KV cache) and scores the tokens.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Samples:
    prompts: torch.Tensor  # [N, P] the prompt of each response, left-padded (each prompt repeated n times)
    prompt_mask: torch.Tensor | None  # [N, P] 1 = real token; None when no prompt is padded
    responses: torch.Tensor  # [N, L] right-padded with pad_token_id after the EOS
    response_mask: torch.Tensor  # [N, L] bool, True on response tokens (the EOS included)
    logps: torch.Tensor  # [N, L] log-prob of each token under the sampling distribution (0 on padding)
    version: int  # the optimizer step whose weights the sampler held


class Generator(Protocol):
    version: int

    def generate(self, prompts, prompt_mask, num_samples: int, rng: torch.Generator) -> Samples: ...

    def sync_weights(self, policy: torch.nn.Module, version: int) -> None: ...


def left_pad(prompts: list[list[int]], pad_id: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """[N, P] left-padded ids and mask; the mask is None when all prompts have the same length."""
    width = max(len(p) for p in prompts)
    if all(len(p) == width for p in prompts):
        return torch.tensor(prompts, dtype=torch.long, device=device), None
    # built as lists and converted once: a tensor write per prompt cost more than the rest of the function
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids.to(device), mask.to(device)


class HFGenerator:
    """Samples from its own copy of the weights; `sync_weights` copies the policy's parameters in place."""

    def __init__(self, policy, max_new_tokens: int, temperature: float, eos_token_id, pad_token_id: int,
                 dtype: torch.dtype | None = None):
        self.model = copy.deepcopy(policy).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if dtype is not None:  # e.g. a bf16 sampler for a float32 policy (precision=bf16)
            self.model.to(dtype)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.version = 0

    @torch.no_grad()
    def sync_weights(self, policy, version: int) -> None:
        for mine, theirs in zip(self.model.parameters(), policy.parameters()):
            mine.copy_(theirs)
        self.version = version

    def state_dict(self) -> dict:
        """What a resumed run needs to sample exactly as before: the (possibly stale) weights and version."""
        return {"weights": self.model.state_dict(), "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])
        self.version = state["version"]

    def generate(self, prompts, prompt_mask, num_samples: int, rng: torch.Generator) -> Samples:
        return sample(self.model, prompts, prompt_mask, num_samples, rng, self.max_new_tokens, self.temperature,
                      self.eos_token_id, self.pad_token_id, self.version)


class MixtureGenerator:
    """Fixed samplers side by side: of the n responses to a prompt, the first n/k come from the first sampler, the
    next n/k from the second, ... With two samplers and n = 2 every pair sets one policy's response against the
    other's (Tang et al.'s SFT-vs-mid and mid-vs-final datasets). Never synced: its members are fixed policies."""

    def __init__(self, members: list[HFGenerator]):
        self.members = members
        self.version = -1  # not a version of the trained policy

    def sync_weights(self, policy, version: int) -> None:
        raise RuntimeError("a mixture of fixed samplers is never synced (sampler_from needs sync_every=inf)")

    def state_dict(self) -> dict:
        return {}  # fixed policies, reloaded from their checkpoints

    def load_state_dict(self, state: dict) -> None:
        pass

    def generate(self, prompts, prompt_mask, num_samples: int, rng: torch.Generator) -> Samples:
        k = len(self.members)
        if num_samples % k:
            raise ValueError(f"samples per prompt ({num_samples}) must be a multiple of the {k} samplers")
        parts = [m.generate(prompts, prompt_mask, num_samples // k, rng) for m in self.members]
        width = max(p.responses.shape[1] for p in parts)
        pad = lambda t, value: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)
        n, B = num_samples // k, prompts.shape[0]

        def merge(tensors):  # [B*n, L] per member -> [B*k*n, L], grouped by prompt, members in order
            return torch.stack([t.view(B, n, -1) for t in tensors], 1).reshape(B * k * n, -1)

        pad_id = self.members[0].pad_token_id
        return Samples(
            prompts=prompts.repeat_interleave(num_samples, 0),
            prompt_mask=None if prompt_mask is None else prompt_mask.repeat_interleave(num_samples, 0),
            responses=merge([pad(p.responses, pad_id) for p in parts]),
            response_mask=merge([pad(p.response_mask, False) for p in parts]),
            logps=merge([pad(p.logps, 0.0) for p in parts]),
            version=self.version,
        )


@torch.no_grad()
def sample(model, prompts, prompt_mask, num_samples, rng, max_new_tokens, temperature, eos_token_id, pad_token_id,
           version: int = 0) -> Samples:
    """num_samples responses per prompt (rows grouped by prompt: prompt i owns rows i*n .. i*n+n-1)."""
    if num_samples > 1:
        prompts = prompts.repeat_interleave(num_samples, 0)
        prompt_mask = None if prompt_mask is None else prompt_mask.repeat_interleave(num_samples, 0)
    if hasattr(model, "sample"):
        tokens, logps, mask = model.sample(prompts, prompt_mask, max_new_tokens, temperature, eos_token_id,
                                           pad_token_id, generator=rng)
    else:
        tokens, logps, mask = _hf_generate(model, prompts, prompt_mask, rng, max_new_tokens, temperature,
                                           eos_token_id, pad_token_id)
    return Samples(prompts, prompt_mask, tokens, mask, logps, version)


def _hf_generate(model, prompts, prompt_mask, rng, max_new_tokens, temperature, eos_token_id, pad_token_id):
    """transformers' generate (KV-cached), then one forward pass for the sampling log-probs."""
    from gapstudy.logprobs import token_logps

    attention = torch.ones_like(prompts) if prompt_mask is None else prompt_mask
    # generate draws from the global RNG: seed it from the run's generator so runs stay reproducible
    seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    devices = [prompts.device] if prompts.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=prompts, attention_mask=attention, do_sample=True, temperature=temperature, top_k=0,
            top_p=1.0, max_new_tokens=max_new_tokens, min_new_tokens=0, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id, use_cache=True,
        )
    tokens = out[:, prompts.shape[1]:]
    if tokens.shape[1] < max_new_tokens:
        tokens = torch.nn.functional.pad(tokens, (0, max_new_tokens - tokens.shape[1]), value=pad_token_id)
    from gapstudy.model import response_mask

    mask = response_mask(tokens, eos_token_id) if eos_token_id is not None else torch.ones_like(tokens, dtype=torch.bool)
    tokens = tokens.masked_fill(~mask, pad_token_id)
    logps = token_logps(model, prompts, prompt_mask, tokens, mask, temperature=temperature)
    return tokens, logps, mask


# ------------------------------------------------------------------------------------------------ vLLM backend
ENGINE_MODEL_PATHS = (  # where a colocated vLLM engine keeps its torch model, newest layout first
    "llm_engine.model_executor.driver_worker.worker.model_runner.model",  # V1 engine, in-process (vLLM >= 0.8)
    "llm_engine.model_executor.driver_worker.model_runner.model",  # V0 engine
)


def vllm_engine(model_path: str, gpu_memory_utilization: float, dtype: str, seed: int):
    """A colocated `vllm.LLM` and its `SamplingParams` class (the `vllm` extra). The V1 engine must run in this
    process so that `sync_weights` can reach its model: VLLM_ENABLE_V1_MULTIPROCESSING=0, as TRL's colocate mode."""
    import os

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        from vllm import LLM, SamplingParams
    except ImportError as error:
        raise ImportError("generator=vllm needs vLLM: pip install 'gapstudy[vllm]' (GPU machines only)") from error
    engine = LLM(model=str(model_path), gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, seed=seed,
                 enable_prefix_caching=True)
    return engine, SamplingParams


class VLLMGenerator:
    """The `Generator` interface on a colocated vLLM engine: same sampling as HFGenerator (temperature, no top-k /
    top-p truncation, up to max_new_tokens, stop at EOS), rows grouped by prompt, right-padded responses.

    `sync_weights` pushes the policy's parameters into the running engine with the model's `load_weights`
    (no engine reload), so `sync_every` means the same as with the HF backend; with sync_every=inf it is never
    called. Log-probs of the sampled tokens come from vLLM (`logprobs=0`: the sampled token only).

    The engine's weights cannot be read back in the policy's layout, so a checkpoint that must restore a stale
    sampler needs a CPU copy of the last pushed weights: with `keep_synced` (the loop sets it only when a checkpoint
    can fall between syncs) every push keeps one; without it, no copy is made (a resumed run re-syncs first).
    """

    def __init__(self, policy, engine, sampling_params, max_new_tokens: int, temperature: float, eos_token_id,
                 pad_token_id: int, keep_synced: bool = True):
        self.engine = engine
        self.keep_synced = keep_synced
        self._synced = None
        self.sampling_params = sampling_params
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.version = 0
        self.sync_weights(policy, 0)  # the engine loaded the checkpoint; start from the policy's exact weights

    def engine_model(self):
        for path in ENGINE_MODEL_PATHS:
            obj = self.engine
            try:
                for attr in path.split("."):
                    obj = getattr(obj, attr)
                return obj
            except AttributeError:
                continue
        raise RuntimeError("cannot reach the vLLM engine's model to sync weights (tried "
                           f"{', '.join(ENGINE_MODEL_PATHS)}); run the engine in-process "
                           "(VLLM_ENABLE_V1_MULTIPROCESSING=0) with a vLLM version that has one of these layouts")

    @torch.no_grad()
    def sync_weights(self, policy, version: int) -> None:
        self._push(policy.state_dict())
        self.version = version

    def _push(self, weights: dict) -> None:
        self.engine_model().load_weights((name, t.detach()) for name, t in weights.items())
        if self.keep_synced:  # for resuming a stale sampler (see the class docstring)
            self._synced = {name: t.detach().to("cpu", copy=True) for name, t in weights.items()}

    def state_dict(self) -> dict:
        return {"weights": self._synced, "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        if state["weights"] is not None:
            self._push(state["weights"])
        self.version = state["version"]

    def generate(self, prompts, prompt_mask, num_samples: int, rng: torch.Generator) -> Samples:
        rows = prompts.tolist() if prompt_mask is None else [
            [t for t, m in zip(ids, mask) if m] for ids, mask in zip(prompts.tolist(), prompt_mask.tolist())]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=rng))
        params = self.sampling_params(n=num_samples, temperature=self.temperature, top_p=1.0,
                                      max_tokens=self.max_new_tokens, logprobs=0, seed=seed,
                                      ignore_eos=self.eos_token_id is None, detokenize=False)
        outputs = self.engine.generate([{"prompt_token_ids": ids} for ids in rows], params, use_tqdm=False)
        N, L = len(rows) * num_samples, self.max_new_tokens
        tokens = torch.full((N, L), self.pad_token_id, dtype=torch.long)
        logps = torch.zeros(N, L)
        mask = torch.zeros(N, L, dtype=torch.bool)
        for i, request in enumerate(outputs):  # the engine returns requests in submission order
            for j, completion in enumerate(request.outputs[:num_samples]):
                ids = list(completion.token_ids)[:L]
                row = i * num_samples + j
                tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[row, : len(ids)] = True
                logps[row, : len(ids)] = torch.tensor(
                    [entry[t].logprob for entry, t in zip(completion.logprobs, ids)], dtype=torch.float)
        if prompts.device.type != "cpu":
            tokens, logps, mask = tokens.to(prompts.device), logps.to(prompts.device), mask.to(prompts.device)
        repeat = lambda t: t.repeat_interleave(num_samples, 0)
        return Samples(repeat(prompts), None if prompt_mask is None else repeat(prompt_mask), tokens, mask, logps,
                       self.version)
