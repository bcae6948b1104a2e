"""Lanchantin et al. 2025, "Bridging Offline and Online Reinforcement Learning for LLMs" [B].

World: synth_lm. Verifiable = its math prompts (0/1 verifier; pairs are a random correct vs a random incorrect
response), non-verifiable = its chat prompts (gold reward model; best vs worst). DPO with beta 0.1 on math (the
online variants also reset pi_ref to the policy when the sampler syncs, as in [B]) and 0.01 on chat; GRPO with
group 8 and beta 0.001. Evaluation covers the family the arm trains on.
"""
from experiments.suite import NULL_SEEDS, SYNTH_FULL_EVAL, Arm, Suite

# lr 3e-4 on math: at 1e-3 DPO on correct-vs-incorrect pairs drives both log-probs down and accuracy below the
# seed's in every regime (measured: 0.41 -> 0.11 online, 0.06 offline after 100 steps)
MATH = ("world.task=math", "eval.tasks=[math]", "algo=dpo", "algo.beta=0.1", "lr=0.0003")
CHAT = ("world.task=chat", "eval.tasks=[chat]", "algo=dpo", "algo.beta=0.01")


def _math(s) -> Arm:
    ref = () if s == "inf" else (f"ref_sync_every={s}",)
    return Arm(f"math_s{s}", (*MATH, f"sync_every={s}", *ref), note=f"math DPO, sampler (and pi_ref) synced every {s}")


SUITES = [
    Suite(
        name="sync_period",
        question="How often must the sampler follow the policy: does semi-online DPO match online DPO and GRPO?",
        paper="Lanchantin et al. 2025 [B], Tables 1-2, Figs. 2-3",
        base=("world=synth_lm", "lr=0.001"),
        profiles={"quick": ("steps=100", "eval.every=25", "eval.prompts=64"),
                  "full": ("steps=500", "eval.every=50", *SYNTH_FULL_EVAL)},  # every arm evaluates one family: 512
        seeds=NULL_SEEDS,  # claim 15 is a null (semi-online ≈ online ≈ GRPO)
        arms=(
            *(_math(s) for s in (1, 10, 100, "inf")),
            Arm("math_grpo", ("world.task=math", "eval.tasks=[math]", "algo=grpo", "lr=0.0003"),
                note="online GRPO on math"),
            Arm("math_s1_no_ref_sync", (*MATH, "sync_every=1"), note="online math DPO with a fixed pi_ref"),
            *(Arm(f"chat_s{s}", (*CHAT, f"sync_every={s}"), note=f"chat DPO, sampler synced every {s}")
              for s in (1, 5, 10, "inf")),
            Arm("chat_grpo", ("world.task=chat", "eval.tasks=[chat]", "algo=grpo"), note="online GRPO on chat"),
        ),
        claims=(15, 16),
    ),
    Suite(
        name="curriculum",
        question="In which order should verifiable (math) and non-verifiable (chat) rewards be trained?",
        paper="Lanchantin et al. 2025 [B], multi-task (Table 3)",
        base=("world=synth_lm", "lr=0.0003", "algo=dpo", "algo.beta=0.1", "eval.baseline=sft"),
        profiles={"quick": ("steps=100", "eval.every=25", "eval.prompts=64"),
                  # both families evaluated (the claim needs each arm on both): all 1024, i.e. 512 of each
                  "full": ("steps=400", "eval.every=50", *SYNTH_FULL_EVAL, "eval.prompts=1024")},
        arms=(
            Arm("nv", ("world.task=chat",), note="online DPO on chat only"),
            Arm("v", ("world.task=math",), note="online DPO on math only"),
            Arm("nv_then_v", ("world.task=math", "init_from=@nv/checkpoint"), needs=("nv",),
                note="math, starting from the chat-trained policy"),
            Arm("v_then_nv", ("world.task=chat", "init_from=@v/checkpoint"), needs=("v",),
                note="chat, starting from the math-trained policy"),
            Arm("mixed", ("world.task=mixed", "batch_size=32"),
                note="math and chat prompts in one run (twice the batch: each family gets a stage's samples)"),
        ),
        claims=(17,),
    ),
]
