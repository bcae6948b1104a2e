"""Xu et al. 2024, "Is DPO superior to PPO for LLM alignment? A comprehensive study" [D], the 8×8 toy.

World: toy8x8 (8 one-hot prompts, 8 one-token responses, gold reward 1 on the diagonal; a fixed dataset comparing
each prompt's diagonal response with π_ref's k = 2 likeliest ones, Bradley-Terry labels). DPO on that dataset
against "PPO with KL" sampling on-policy with the gold reward, at the same β. gapstudy has no value-function PPO: the
PPO arm is GRPO, i.e. PPO's clipped-ratio objective with a group-mean baseline (8 samples per prompt) in place of a
critic, and a k3 KL penalty to π_ref per token. β is swept because Xu et al. did not publish it; the claim is decided
at β = 0.1, the first value (DPO's usual default), and the other values show how the verdict depends on it.
"""
from experiments.suite import Arm, Suite

BETAS = (0.1, 0.2, 0.3)  # KL strength, shared by DPO and PPO (the same KL-regularised objective)

SUITES = [
    Suite(
        name="toy8x8",
        question="On the 8×8 toy, does DPO on a dataset covering few responses raise the responses it never saw above "
                 "π_ref, while PPO with a KL penalty recovers the diagonal?",
        paper="Xu et al. 2024 [D], 8×8 toy",
        base=("world=toy8x8",),
        profiles={"quick": ("steps=200", "eval.every=25"), "full": ("steps=600", "eval.every=25")},
        arms=(
            Arm("dpo_offline", ("algo=dpo", "data=dataset", "data.path=${world.pairs_path}"),
                sweep=(("algo.beta", BETAS),), note="DPO on the world's fixed dataset"),
            Arm("ppo_kl", ("algo=grpo", "sync_every=1"), sweep=(("algo.beta", BETAS),),
                note="online GRPO (PPO's clipped objective, group baseline) with the gold reward and a KL penalty"),
            Arm("dpo_online", ("algo=dpo", "algo.beta=0.1", "sync_every=1"),
                note="DPO on fresh on-policy pairs labelled by the gold reward: coverage without the fixed dataset"),
        ),
        claims=(18,),
    ),
]
