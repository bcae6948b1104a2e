"""Tang et al. 2024, "Understanding the performance gap between online and offline alignment" [A].

World: synth_lm's chat prompts (gold = the chat reward model), IPO as Tang et al. write it, E[(beta*h - 1/2)^2].
Offline = gold-labelled pairs of SFT samples (sync_every=inf: fresh SFT samples each step, an unbounded D_golden;
in kl_budget also data=golden: the finite D_golden the proxy RM is trained on, Tang et al.'s offline data);
online = pairs of the policy's own samples, labelled by the proxy RM in kl_budget (as in [A]) and by the gold reward
in the ablations (so that they isolate the data, not the labeller). Win rate is against the SFT policy (Tang et al.
use a strong online policy as the baseline; any fixed baseline ranks the arms the same way).
"""
from experiments.suite import NULL_SEEDS, SYNTH_FULL_EVAL, Arm, Suite

# beta = 0.01 and lr = 1e-3: the setting where this world shows an online-offline gap within a few hundred steps
# (beta = 0.1 keeps both regimes at KL ~2 nats, where they coincide)
CHAT = ("world=synth_lm", "world.task=chat", "eval.tasks=[chat]", "lr=0.001")
IPO = ("algo=ipo", "algo.beta=0.01")
PROFILES = {"quick": ("steps=100", "eval.every=25", "eval.prompts=64"),
            "full": ("steps=400", "eval.every=50", *SYNTH_FULL_EVAL)}  # chat-only evaluation: 512 chat prompts
# full: evaluations at 0, 1, 2, 4, ..., 256 and every 50 steps (18 per run, not 26 with every 25): the log-spaced
# points cover the low KL budgets, and one 512-prompt evaluation costs about 9 training steps (issue 12, speed;
# fixed before any run of these suites at the issue-12 protocol)

ONLINE, OFFLINE = ("sync_every=1", *IPO), ("sync_every=inf", *IPO)  # IPO unless an arm says otherwise
ONLINE_LOG = ("data=replay", "data.path=@online", *IPO)
# kl_budget's sweeps. Arms compared at matched KL pool the same number of configurations: the frontier keeps the best
# checkpoint under each budget, so an arm with more configurations has more draws of evaluation noise to be lucky
# with (a winner's curse). Every IPO arm sweeps the same 3 betas at the base lr = 0.001 (Tang et al. pooled offline
# runs over 3 LRs x 3 betas x 2 lengths; an LR sweep for offline only, 6 configurations against online's 3, favoured
# offline); every DPO arm sweeps the same 3 betas. A configuration is replicated over the seeds, never pooled as one.
IPO_BETAS = (0.01, 0.03, 0.1)
DPO_BETAS = (0.03, 0.1, 0.3)

SUITES = [
    Suite(
        name="kl_budget",
        seeds=NULL_SEEDS,  # claim 9 is a null (accuracy does not predict win rate)
        question="At the same KL from the SFT policy, does online preference optimisation reach a higher win rate "
                 "than offline?",
        paper="Tang et al. 2024 [A], Fig. 1",
        base=CHAT,
        profiles=PROFILES,
        arms=(
            Arm("online_ipo", ("sync_every=1", "algo=ipo", "labeller=proxy"), sweep=(("algo.beta", IPO_BETAS),),
                note="online IPO, on-policy pairs labelled by the proxy RM"),
            Arm("offline_ipo", ("sync_every=inf", "algo=ipo"), sweep=(("algo.beta", IPO_BETAS),),
                note="offline IPO on gold-labelled SFT pairs, swept over beta"),
            Arm("offline_ipo_golden", ("data=golden", "algo=ipo"), sweep=(("algo.beta", IPO_BETAS),),
                note="offline IPO on D_golden, the 2,048 gold-labelled SFT pairs the online arm's proxy learns from "
                     "(Tang et al.'s offline data: both regimes see the same gold labels)"),
            Arm("online_dpo", ("sync_every=1", "algo=dpo", "labeller=proxy"), sweep=(("algo.beta", DPO_BETAS),),
                note="online DPO, proxy-labelled"),
            Arm("offline_dpo", ("sync_every=inf", "algo=dpo"), sweep=(("algo.beta", DPO_BETAS),),
                note="offline DPO on gold-labelled SFT pairs"),
        ),
        claims=(1, 2, 8, 9, 10, 11),
    ),
    Suite(
        name="data_coverage",
        question="Is the online advantage a matter of which data is seen, or of seeing it in order?",
        paper="Tang et al. 2024 [A], Fig. 4 and App. F",
        base=CHAT,
        profiles=PROFILES,
        arms=(
            Arm("online", ONLINE, note="online IPO; its pair log is the replayed dataset"),
            Arm("offline_dataset", OFFLINE, note="offline IPO on SFT samples"),
            Arm("replay_original", (*ONLINE_LOG, "replay.order=original"), needs=("online",),
                note="offline IPO on the online pair log, original order"),
            Arm("replay_shuffled", (*ONLINE_LOG, "replay.order=shuffled", "replay.shuffle_window=all"),
                needs=("online",), note="offline IPO on the online pair log, uniformly shuffled"),
        ),
        claims=(3, 4),
    ),
    Suite(
        name="shuffle_degree",
        seeds=NULL_SEEDS,  # claim 5 is a null in part (no shuffle ≈ small windows)
        question="How far can the online pair log be shuffled before its advantage is lost?",
        paper="Tang et al. 2024 [A], Fig. 13",
        base=CHAT,
        profiles=PROFILES,
        arms=(
            Arm("online", ONLINE),
            *(Arm(f"window_{w}", (*ONLINE_LOG, "replay.order=shuffled", f"replay.shuffle_window={w}"),
                  needs=("online",), note=f"the online log shuffled within windows of {w} batches")
              for w in (1, 4, 32, 256, "all")),
        ),
        claims=(5,),
    ),
    Suite(
        name="suboptimal_data",
        question="Does offline training fail for lack of good responses, or for lack of on-policy contrast?",
        paper="Tang et al. 2024 [A], Figs. 5 and 12",
        base=CHAT,
        profiles=PROFILES,
        arms=(
            Arm("online", (*ONLINE, "snapshots=[0.2]"), note="online IPO; saves its policy at 20% (Tang's step 800)"),
            Arm("offline_dataset", OFFLINE, note="offline IPO on SFT-vs-SFT pairs"),
            Arm("final_vs_final", (*OFFLINE, "sampler_from=[@online/checkpoint]"), needs=("online",),
                note="both responses from the final online policy"),
            Arm("sft_vs_mid", (*OFFLINE, "sampler_from=[sft,@online/snapshot-0.2]"), needs=("online",),
                note="one response from SFT, one from the 20% policy"),
            Arm("mid_vs_final", (*OFFLINE, "sampler_from=[@online/snapshot-0.2,@online/checkpoint]"),
                needs=("online",), note="one from the 20% policy, one from the final policy"),
            Arm("sft_vs_final", (*OFFLINE, "sampler_from=[sft,@online/checkpoint]"), needs=("online",),
                note="one from SFT, one from the final policy"),
        ),
        claims=(6, 7),
    ),
    Suite(
        name="best_of_2",
        seeds=NULL_SEEDS,  # claim 12 is a null in part (the shuffled log nearly matches online)
        question="Is the online advantage specific to contrastive losses, or does Best-of-2 show it too?",
        paper="Tang et al. 2024 [A], Fig. 9",
        base=CHAT,
        profiles=PROFILES,
        arms=(
            Arm("ipo_online", ONLINE),
            Arm("ipo_offline", OFFLINE),
            Arm("bo2_online", ("sync_every=1", "algo=best_of_2"), note="SFT on the better of two on-policy samples"),
            Arm("bo2_offline", ("sync_every=inf", "algo=best_of_2"), note="SFT on the better of two SFT samples"),
            Arm("bo2_shuffled", ("algo=best_of_2", "data=replay", "data.path=@bo2_online", "replay.order=shuffled",
                                 "replay.shuffle_window=all"), needs=("bo2_online",),
                note="Best-of-2 on the uniformly shuffled online Best-of-2 log"),
        ),
        claims=(12,),
    ),
]
