"""Tajwar et al. 2024, "Preference fine-tuning of LLMs should leverage suboptimal, on-policy data" [C].

World: token_bandit (GPT-nano; R1's optimum lies where the reference is unlikely, R2's at its mode).
On-policy = sampler synced every step; offline = samples of the reference only (sync_every=inf).
"""
from experiments.suite import NULL_SEEDS, Arm, Suite

# IPO with Tajwar et al.'s margin 10: h* = 1/(2 beta) = 10 (beta = 0.1 stops every pair at 5 nats and cannot reach R1)
ALGOS = {"dpo": ("algo=dpo",), "ipo": ("algo=ipo", "algo.beta=0.05"), "best_of_n": ("algo=best_of_2", "algo.samples_per_prompt=4"),
         "reinforce": ("algo=reinforce",)}
REGIMES = {"onpolicy": ("sync_every=1",), "offline": ("sync_every=inf",)}
REWARDS = ("R1", "R2")
PROFILES = {"quick": ("steps=100", "eval.every=25", "eval.prompts=128"),
            "full": ("steps=400", "eval.every=25", "world.eval_prompts=512", "eval.prompts=512")}
# the bandit's held-out set is draws of its 100 one-token prompts; the claims read the final gold reward (no win rate,
# no KL matching), and 512 draws (cheap: 9-token responses) halve the evaluation variance of claim 13's null clause

SUITES = [
    Suite(
        name="bandit",
        seeds=NULL_SEEDS,  # claim 13's R2 clause is a null (offline ≈ on-policy)
        question="Does on-policy sampling matter when the reward's optimum is unlikely under the reference (R1) "
                 "and not when it sits at the reference's mode (R2)?",
        paper="Tajwar et al. 2024 [C], token bandit",
        base=("world=token_bandit",),
        profiles=PROFILES,
        arms=tuple(Arm(f"{a}_{r}_{w}", (*ALGOS[a], *REGIMES[r], f"reward={w}"))
                   for w in REWARDS for a in ALGOS for r in REGIMES),
        claims=(13,),
    ),
    Suite(
        name="sample_reuse",
        question="At a fixed sample budget, does taking T gradient steps on each batch (staler data) cost more "
                 "when the optimum is unlikely under the reference?",
        paper="Tajwar et al. 2024 [C], sample reuse",
        base=("world=token_bandit", "algo=dpo", "sync_every=1"),
        profiles={"quick": ("eval.prompts=128",), "full": ("eval.prompts=256",)},  # the arms fix the length
        # the same samples for every T: 50 collected batches of 16 prompts x 2 samples (1,600 samples, short of
        # the ~3,000 at which every arm saturates), each batch used for T gradient steps (so 50*T steps)
        arms=tuple(Arm(f"T{t}_{w}", (f"reuse={t}", "batch_size=16", f"steps={50 * t}", f"eval.every={5 * t}",
                                     f"reward={w}"),
                       note=f"50 batches of 16 prompts, {t} gradient steps on each")
                   for w in REWARDS for t in (1, 2, 4, 8)),
        claims=(14,),
    ),
]
