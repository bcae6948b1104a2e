"""Preference rows: a preference dataset (`data.path` with its field mapping) as the pair rows every source
yields, its text, token ids or chat messages tokenised as the world's policy sees them."""
from __future__ import annotations

import warnings

from gapstudy.data.pair_log import pair_log_folder, read_shards
from gapstudy.errors import DataError
from gapstudy.worlds.records import load_records


def _is_messages(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) for m in value)


def _turns(value) -> list[dict] | None:
    """A prompt value as chat turns (text is one user turn) for comparing prompts; None for token ids."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if _is_messages(value):
        return [{"role": m.get("role"), "content": m.get("content")} for m in value]
    return None


def read_preference_rows(data_cfg, tokenizer, eos_token_id, encode_prompt=None, cache_dir=None) -> list[dict]:
    """The pairs of a preference dataset (`data.path` with its split, subset and prompt/chosen/rejected field
    mapping) as pair rows of token ids, the format every source yields.

    chosen / rejected hold text, token-id lists, or chat messages [{role, content}] (TRL's conversational format):
    a response is the content of the trailing assistant turn. Text responses are tokenised without special tokens
    and end with EOS, as sampled responses do. The prompt is the prompt field (text, messages or token ids), or,
    with `data.prompt_field=null`, the chat turns chosen and rejected share before their replies (TRL's implicit
    prompt). Text and message prompts go through `encode_prompt(value) -> ids` when given (world=hf's chat
    template); without it, text is tokenised plainly and messages cannot be rendered."""
    d = data_cfg
    folder = pair_log_folder(d.path)
    if folder is not None:  # a run's pair log is a preference dataset too
        table, columns = read_shards(folder), None
    else:
        data = load_records(d.path, d.get("split", "train"), d.get("subset"), cache_dir, key="data.path")
        table, columns = data.to_list(), data.column_names
    if not table:
        raise DataError(f"dataset {d.path} is empty")
    columns = columns or list(table[0])
    fields = {"prompt": d.prompt_field, "chosen": d.chosen_field, "rejected": d.rejected_field}
    missing = [f for f in fields.values() if f is not None and f not in columns]
    if missing:
        raise DataError(f"dataset {d.path} lacks field(s) {', '.join(missing)}; it has: {', '.join(columns)}")

    vocab = len(tokenizer)

    def token_ids(value, field):
        if not isinstance(value, (list, tuple)):
            raise DataError(f"dataset {d.path}: a {field} value is a {type(value).__name__}; valid: text, token ids "
                            "or chat messages [{role, content}]")
        for t in value:
            if isinstance(t, bool) or not isinstance(t, int):
                raise DataError(f"dataset {d.path}: a {field} value holds {str(t)[:40]!r} ({type(t).__name__}); "
                                "valid: text, a list of token ids or chat messages [{role, content}]")
            if not 0 <= t < vocab:
                raise DataError(f"dataset {d.path}: a {field} value holds token id {t}, outside the world's "
                                f"vocabulary; valid: ids in [0, {vocab})")
        return list(value)

    def prompt_ids(value):
        if encode_prompt is not None and (isinstance(value, str) or _is_messages(value)):
            return list(encode_prompt(value))
        if _is_messages(value):
            raise DataError(f"dataset {d.path}: its prompts are chat messages, which need a chat template to become "
                            "tokens; valid: world=hf with a tokenizer that has one, or text / token-id prompts")
        if isinstance(value, str):
            return tokenizer.encode(value, add_special_tokens=False)
        return token_ids(value, fields["prompt"])

    def response_ids(value, field):
        if isinstance(value, str):
            ids = tokenizer.encode(value, add_special_tokens=False)
            return ids + [eos_token_id] if eos_token_id is not None else ids
        return token_ids(value, field)

    def reply(value, field):
        """A conversation -> (the turns before the reply, the reply's text)."""
        turns = _turns(value)
        if turns[-1]["role"] != "assistant" or not isinstance(turns[-1]["content"], str):
            raise DataError(f"dataset {d.path}: a {field} conversation ends with a {turns[-1]['role']!r} turn; "
                            "valid: chat messages ending with the assistant's reply (text)")
        return turns[:-1], turns[-1]["content"]

    def pair(i, r):
        chosen, rejected = r[fields["chosen"]], r[fields["rejected"]]
        prompt = r[fields["prompt"]] if fields["prompt"] is not None else None
        if _is_messages(chosen) or _is_messages(rejected):
            if not (_is_messages(chosen) and _is_messages(rejected)):
                raise DataError(f"dataset {d.path}: one of {fields['chosen']} / {fields['rejected']} holds chat "
                                "messages and the other does not; valid: both or neither")
            before, chosen = reply(chosen, fields["chosen"])
            rejected_before, rejected = reply(rejected, fields["rejected"])
            if before != rejected_before:
                raise DataError(f"dataset {d.path}: row {i}'s chosen and rejected conversations differ before their "
                                f"replies, so they answer different prompts: {str(before)[:100]} vs "
                                f"{str(rejected_before)[:100]}")
            if prompt is None:  # the implicit prompt: the shared turns
                if not before:
                    raise DataError(f"dataset {d.path}: data.prompt_field=null but a chosen conversation holds only "
                                    "the reply; name the prompt column with data.prompt_field")
                prompt = before
            elif before and _turns(prompt) != before:
                raise DataError(f"dataset {d.path}: row {i}'s {fields['prompt']} field disagrees with the turns before "
                                "the replies in chosen/rejected; set data.prompt_field=null to take the prompt from them")
        elif prompt is None:
            raise DataError(f"dataset {d.path}: data.prompt_field=null needs chosen/rejected as chat messages (the "
                            "prompt is the turns they share); implicit prompts in plain text (Anthropic/hh-rlhf) are "
                            "not supported: give a prompt column")
        return (prompt_ids(prompt), response_ids(chosen, fields["chosen"]),
                response_ids(rejected, fields["rejected"]))

    rows = []
    for i, r in enumerate(table):
        prompt, chosen, rejected = pair(i, r)
        rows.append({"step": r.get("step", -1), "prompt": prompt, "chosen": chosen, "rejected": rejected,
                     "chosen_reward": r.get("chosen_reward"), "rejected_reward": r.get("rejected_reward"),
                     "chosen_logps": None, "rejected_logps": None, "sampler_version": r.get("sampler_version"),
                     "task": r.get("task", "default")})
    return rows


def drop_long_pairs(rows: list[dict], max_prompt, max_response, path) -> list[dict]:
    """Pairs within the token limits (None = no limit). Long pairs are dropped, not truncated: a cut response has
    no EOS and is no longer the response the label was given to."""
    def fits(r):
        return ((max_prompt is None or len(r["prompt"]) <= max_prompt)
                and (max_response is None or max(len(r["chosen"]), len(r["rejected"])) <= max_response))

    kept = [r for r in rows if fits(r)]
    if not kept:
        raise DataError(f"dataset {path}: every one of its {len(rows)} pairs exceeds data.max_prompt_tokens="
                        f"{max_prompt} or data.max_response_tokens={max_response}")
    if len(kept) < len(rows):
        warnings.warn(f"dataset {path}: dropped {len(rows) - len(kept)} of {len(rows)} pairs longer than "
                      f"data.max_prompt_tokens={max_prompt} / data.max_response_tokens={max_response} tokens",
                      stacklevel=2)
    return kept
