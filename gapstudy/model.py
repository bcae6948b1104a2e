"""TinyGPT: the lean causal LM behind the embedded worlds, registered with transformers' Auto classes.

It is an ordinary `PreTrainedModel` (saved with `save_pretrained`, loaded by path with
`AutoModelForCausalLM.from_pretrained`), so the loop treats it exactly like a hub model. What makes it lean is
what the CPU benchmark needs: one fused QKV projection, SDPA attention, logits tied to the embedding, and a
KV-cached `sample` loop with a preallocated cache (a handful of kernel launches per token, no generation
framework overhead). `TinyGPTForSequenceClassification` is the same trunk with a scalar head: the proxy reward model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutput, SequenceClassifierOutput


BLOCKED_LOGIT = -1.0e4  # logit of a token the LM head may not emit: exp(-1e4 - max) underflows to exactly 0


class TinyGPTConfig(PretrainedConfig):
    model_type = "gapstudy_tinygpt"

    def __init__(
        self,
        vocab_size: int = 102,  # token_bandit: 100 tokens + <pad> + <eos>
        n_positions: int = 32,  # longest prompt + response
        n_embd: int = 48,  # Tajwar et al.'s GPT-nano: 48-dim embeddings
        n_layer: int = 3,  # ... 3 layers
        n_head: int = 3,  # ... 3 heads
        num_labels: int = 1,  # the sequence-classification head (proxy reward model) is scalar
        output_token_ids: list[int] | None = None,  # tokens the LM head may emit (toy8x8: the 8 responses); None = all
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.output_token_ids = None if output_token_ids is None else [int(t) for t in output_token_ids]
        kwargs.setdefault("tie_word_embeddings", False)  # logits reuse the embedding matrix directly, no lm_head
        super().__init__(num_labels=num_labels, **kwargs)


class Block(nn.Module):
    """Pre-norm transformer block; attention runs either over the whole sequence or one new token and a cache."""

    def __init__(self, config: TinyGPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_out = nn.Linear(4 * config.n_embd, config.n_embd)

    def _qkv(self, x: torch.Tensor):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        return q, k, v  # each [B, H, T, D]

    def _finish(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.c_out(F.gelu(self.c_fc(self.ln_2(x))))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None):
        q, k, v = self._qkv(x)
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self._finish(x, y), k, v

    def step(self, x, cache_k, cache_v, pos: int, key_mask: torch.Tensor | None):
        """x: [B, 1, C], the token at position `pos`; cache_*: [B, H, T_max, D], filled up to `pos`."""
        q, k, v = self._qkv(x)
        cache_k[:, :, pos : pos + 1] = k
        cache_v[:, :, pos : pos + 1] = v
        mask = None if key_mask is None else key_mask[:, None, None, : pos + 1]
        y = F.scaled_dot_product_attention(q, cache_k[:, :, : pos + 1], cache_v[:, :, : pos + 1], attn_mask=mask)
        return self._finish(x, y)


class TinyGPTPreTrainedModel(PreTrainedModel):
    config_class = TinyGPTConfig
    base_model_prefix = "transformer"
    _supports_sdpa = True
    _no_split_modules = ["Block"]  # FSDP shards block by block (what transformers models declare too)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class TinyGPTModel(TinyGPTPreTrainedModel):
    def __init__(self, config: TinyGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None, return_kv: bool = False):
        """Hidden states [B, T, C]. Left padding is handled through `attention_mask` (1 = real token)."""
        attn_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            attention_mask = attention_mask.bool()
            T = input_ids.shape[1]
            causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
            # every query may see itself, so rows of a padded prefix never become all-masked (NaN in SDPA)
            attn_mask = (causal & attention_mask[:, None, None, :]) | torch.eye(T, dtype=torch.bool, device=input_ids.device)
            if position_ids is None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(position_ids)
        kv = []
        for block in self.h:
            x, k, v = block(x, attn_mask)
            if return_kv:
                kv.append((k, v))
        x = self.ln_f(x)
        return (x, kv) if return_kv else x


class TinyGPTForCausalLM(TinyGPTPreTrainedModel):
    def __init__(self, config: TinyGPTConfig):
        super().__init__(config)
        self.transformer = TinyGPTModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., C] hidden states -> [..., V] logits, weights tied to the embedding. Tokens outside
        `config.output_token_ids` get BLOCKED_LOGIT: probability exactly 0 in float32, yet finite, so exact KL and
        entropy stay finite (0 * finite) where -inf would give NaN."""
        logits = F.linear(hidden, self.transformer.wte.weight)
        allowed = self.config.output_token_ids
        if allowed is None:
            return logits
        blocked = torch.ones(logits.shape[-1], dtype=torch.bool, device=logits.device)
        blocked[allowed] = False
        return logits.masked_fill(blocked, BLOCKED_LOGIT)

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None, logits_to_keep: int = 0,
                **kwargs) -> CausalLMOutput:
        """logits_to_keep (transformers' convention): the LM head on the last n positions only; 0 = all."""
        hidden = self.transformer(input_ids, attention_mask, position_ids)
        logits = self.lm_logits(hidden[:, -logits_to_keep:])  # [B, T, V] (T = logits_to_keep when given)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def sample(
        self,
        input_ids: torch.Tensor,  # [B, P] prompts, left-padded
        attention_mask: torch.Tensor | None,  # [B, P] 1 = real token; None = no padding
        max_new_tokens: int,
        temperature: float = 1.0,
        eos_token_id: int | None = None,
        pad_token_id: int = 0,
        generator: torch.Generator | None = None,
    ):
        """Ancestral sampling with a preallocated KV cache.

        Returns (tokens [B, L], logps [B, L], mask [B, L]): the sampled response, the sampling distribution's
        log-probability of each token, and 1 on real response tokens (the EOS included, padding after it excluded).
        """
        tr = self.transformer
        B, P = input_ids.shape
        T = P + max_new_tokens
        if T > self.config.n_positions:
            raise ValueError(f"prompt ({P}) + response ({max_new_tokens}) tokens exceed n_positions={self.config.n_positions}")
        padded = attention_mask is not None and not bool(attention_mask.all())
        key_mask = None
        if padded:
            key_mask = torch.ones(B, T, dtype=torch.bool, device=input_ids.device)
            key_mask[:, :P] = attention_mask.bool()
            next_pos = attention_mask.long().sum(-1)  # [B] position id of the first response token
        hidden, kv = tr(input_ids, attention_mask if padded else None, return_kv=True)
        H, D = self.config.n_head, self.config.n_embd // self.config.n_head
        caches = []
        for k, v in kv:
            ck = k.new_empty(B, H, T, D)
            cv = v.new_empty(B, H, T, D)
            ck[:, :, :P] = k
            cv[:, :, :P] = v
            caches.append((ck, cv))
        tokens = input_ids.new_full((B, max_new_tokens), pad_token_id)
        logps = hidden.new_zeros(B, max_new_tokens, dtype=torch.float32)
        alive = torch.ones(B, dtype=torch.bool, device=input_ids.device)
        last = hidden[:, -1]
        for t in range(max_new_tokens):
            logits = self.lm_logits(last).float()  # sampling log-probs in float32 even for a bf16 sampler
            if temperature != 1.0:
                logits = logits / temperature
            logp = torch.log_softmax(logits, dim=-1)
            token = torch.multinomial(logp.exp(), 1, generator=generator)  # [B, 1]
            tokens[:, t : t + 1] = token
            logps[:, t : t + 1] = logp.gather(-1, token)
            if eos_token_id is not None:
                if t > 0:  # a finished row keeps padding; its log-prob is masked out below
                    tokens[:, t].masked_fill_(~alive, pad_token_id)
                alive = alive & (tokens[:, t] != eos_token_id)
                if t % 4 == 3 and not bool(alive.any()):
                    break
            if t == max_new_tokens - 1:
                break
            pos = P + t
            if padded:
                x = tr.wte(token) + tr.wpe(next_pos + t)[:, None]
            else:
                x = tr.wte(token) + tr.wpe.weight[pos]
            for block, (ck, cv) in zip(tr.h, caches):
                x = block.step(x, ck, cv, pos, key_mask)
            last = tr.ln_f(x)[:, 0]
        mask = response_mask(tokens, eos_token_id) if eos_token_id is not None else torch.ones_like(tokens, dtype=torch.bool)
        return tokens, logps * mask, mask


def response_mask(tokens: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """[B, L] bool: True up to and including the first EOS (everything if there is none)."""
    is_eos = (tokens == eos_token_id).long()
    before = is_eos.cumsum(-1) - is_eos  # number of EOS strictly before each position
    return before == 0


class TinyGPTForSequenceClassification(TinyGPTPreTrainedModel):
    """Scalar score read at the last real token: a Bradley-Terry reward model on the TinyGPT trunk."""

    def __init__(self, config: TinyGPTConfig):
        super().__init__(config)
        self.transformer = TinyGPTModel(config)
        self.score = nn.Linear(config.n_embd, config.num_labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs) -> SequenceClassifierOutput:
        hidden = self.transformer(input_ids, attention_mask)
        if attention_mask is None:
            last = hidden[:, -1]
        else:  # right-padded responses: the last real token is the last 1 in the mask
            index = attention_mask.shape[1] - 1 - attention_mask.flip(-1).long().argmax(-1)
            last = hidden[torch.arange(hidden.shape[0]), index]
        return SequenceClassifierOutput(logits=self.score(last))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


AutoConfig.register(TinyGPTConfig.model_type, TinyGPTConfig)
AutoModelForCausalLM.register(TinyGPTConfig, TinyGPTForCausalLM)
AutoModelForSequenceClassification.register(TinyGPTConfig, TinyGPTForSequenceClassification)

__all__ = ["TinyGPTConfig", "TinyGPTForCausalLM", "TinyGPTForSequenceClassification", "response_mask", "param_count"]
