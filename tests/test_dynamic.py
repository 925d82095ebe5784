"""Dynamic sampling (DAPO's filter, train.py --dynamic_sampling): groups whose rewards are all equal are
dropped and prompts drawn again, at most dynamic_max_draws times a step. Worked on hand-made rollouts whose
rewards are known, then on the real model (padding, log-probs) and in real runs (resume, every algo)."""
import json

import pytest
import torch

from model import char_tokenizer, response_logprobs, tiny_model
from rollout import Rollout, dynamic_sample, join_groups, rollout
from test_train import TINY, records, run

G = 2


def fake_rollout(problems, n_prompt=3, T=2):
    """A rollout of len(problems) groups of G rows; row r holds token ids 100 + r so rows can be followed."""
    B = len(problems) * G
    ids = torch.arange(100, 100 + B)[:, None].repeat(1, n_prompt + T)
    return Rollout(input_ids=ids, attention_mask=torch.ones_like(ids), response_mask=torch.ones(B, T, dtype=torch.long),
                   old_logp=-torch.ones(B, T), entropy=torch.ones(B, T), truncated=torch.zeros(B, dtype=torch.bool),
                   texts=[f"{p}{i}" for p in problems for i in range(G)], n_prompt=n_prompt)


def scripted(draws, rewards):
    """draw() gives the next list of problems; sample() a fake rollout and the scripted rewards of its groups."""
    draws, calls = iter(draws), []

    def draw():
        calls.append(1)
        return next(draws)

    def sample(problems):
        return fake_rollout(problems), torch.tensor([r for p in problems for r in rewards[p]], dtype=torch.float)
    return draw, sample, calls


REWARDS = {"a": (1, 1), "b": (0, 1), "c": (0, 0), "d": (1, 0), "e": (.1, .1), "f": (1, 0)}


def test_all_equal_groups_are_dropped_and_the_step_refilled():
    # 2 groups wanted. Draw 1: a (1, 1) all correct, b (0, 1) mixed -> keep b. Draw 2: c (0, 0) all wrong,
    # d (1, 0) mixed -> keep d. Full after 2 draws of 2 prompts: the third draw is never made.
    draw, sample, calls = scripted([["a", "b"], ["c", "d"], ["e", "f"]], REWARDS)
    problems, ro, rewards, log = dynamic_sample(draw, sample, 2, G, 4, pad_id=0)
    assert problems == ["b", "d"] and len(calls) == 2
    assert rewards.tolist() == [0, 1, 1, 0]
    assert ro.texts == ["b0", "b1", "d0", "d1"]
    assert log == {"prompts_drawn": 4, "groups_kept": 2, "draw_bound_hit": 0.0}


def test_only_as_many_groups_as_the_step_holds_are_kept():
    # 1 group wanted; draw 1 has two mixed groups (b, d): the first is kept, the batch is never larger
    draw, sample, _ = scripted([["b", "d"]], REWARDS)
    problems, ro, rewards, log = dynamic_sample(draw, sample, 1, G, 4, pad_id=0)
    assert problems == ["b"] and rewards.tolist() == [0, 1] and ro.input_ids.shape[0] == G


def test_the_bound_holds_and_the_step_goes_on_with_what_it_has():
    # 2 groups wanted, at most 2 draws: draw 1 keeps b, draw 2 (a, e: all 1, all format score .1) keeps none
    draw, sample, calls = scripted([["a", "b"], ["a", "e"], ["d", "f"]], REWARDS)
    problems, ro, rewards, log = dynamic_sample(draw, sample, 2, G, 2, pad_id=0)
    assert len(calls) == 2 and problems == ["b"] and ro.texts == ["b0", "b1"]
    assert log == {"prompts_drawn": 4, "groups_kept": 1, "draw_bound_hit": 1.0}
    # nothing informative within the bound: the last draw, whole (its advantages are 0, as in plain GRPO)
    draw, sample, calls = scripted([["a", "c"], ["e", "a"]], REWARDS)
    problems, ro, rewards, log = dynamic_sample(draw, sample, 2, G, 2, pad_id=0)
    assert problems == ["e", "a"] and rewards.tolist() == pytest.approx([.1, .1, 1, 1]) and log["groups_kept"] == 0


def test_join_groups_pads_prompts_left_and_responses_right():
    # groups of a short-prompt, long-response rollout and a long-prompt, short-response one
    one, two = fake_rollout(["x", "y"], n_prompt=2, T=3), fake_rollout(["z"], n_prompt=4, T=1)
    ro = join_groups([one, two], [[1], [0]], G, pad_id=0)
    assert ro.n_prompt == 4 and ro.input_ids.shape == (4, 7)
    assert ro.input_ids[0].tolist() == [0, 0, 102, 102, 102, 102, 102]  # y's first row: 2 pads on the left
    assert ro.attention_mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert ro.input_ids[2].tolist() == [100, 100, 100, 100, 100, 0, 0]  # z's first row: 2 pads on the right
    assert ro.attention_mask[2].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert ro.response_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert ro.old_logp[2].tolist() == [-1, 0, 0] and ro.texts == ["y0", "y1", "z0", "z1"]


def test_joined_rollouts_keep_their_log_probs_on_the_real_model():
    # two real rollouts with prompts of different lengths, joined: every kept token's log-prob under the model is
    # what it was in its own rollout (left padding shifts nothing: positions come from the attention mask)
    torch.manual_seed(0)
    tok = char_tokenizer()
    model = tiny_model(tok).eval()
    a = rollout(model, tok, ["1+2=", "12+34="], G, 6)
    b = rollout(model, tok, ["a much longer prompt: 7*8="], G, 9)
    ro = join_groups([a, b], [[1], [0]], G, tok.pad_token_id)
    logp, _ = response_logprobs(model, ro.input_ids, ro.attention_mask, ro.n_prompt)
    want = torch.cat([torch.nn.functional.pad(a.old_logp[2:4], (0, ro.response_mask.shape[1] - a.old_logp.shape[1])),
                      torch.nn.functional.pad(b.old_logp[0:2], (0, ro.response_mask.shape[1] - b.old_logp.shape[1]))])
    torch.testing.assert_close(logp * ro.response_mask, want, rtol=0, atol=1e-5)


# the shipped base, whose groups are often mixed, and responses long enough to hold an answer
DYN = ["--init_from=tiny", "--max_new_tokens=32", "--dynamic_sampling", "--dynamic_max_draws=3",
       "--eval_at_start=False", "--eval_interval=100"]


def test_a_killed_run_resumes_to_the_same_samples(tmp_path):
    # 3 steps straight, against 2 steps, stopped, and resumed to 3: the prompt sampler's extra draws are in the
    # checkpoint, so step 3 draws, keeps and learns the same
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run(f"--out_dir={straight}", *TINY, *DYN, "--max_steps=3")
    run(f"--out_dir={stopped}", *TINY, *DYN, "--max_steps=2")
    run(f"--out_dir={stopped}", "--init_from=resume", "--max_steps=3")
    a = [r for r in records(straight) if "step" in r]
    b = [r for r in records(stopped) if "step" in r]
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key in ("prompts_drawn", "groups_kept", "accuracy", "loss", "rollouts"):
            assert ra[key] == rb[key], (ra["step"], key)
    assert a[-1]["rollouts"] == sum(r["prompts_drawn"] for r in a) * 3  # every response sampled, G = 3


@pytest.mark.parametrize("algo", ["grpo", "ds-grpo", "entropy-bonus", "20-entropy", "stapo", "ict", "dasd"])
def test_dynamic_sampling_runs_with_every_algo(tmp_path, algo):
    # each step keeps what it could and says so
    p = run(f"--out_dir={tmp_path}", f"--algo={algo}", *TINY, *DYN, "--max_steps=1", "--ict_warmup_steps=0",
)  # dasd: a base built here that learned hints
    step = next(r for r in records(tmp_path) if "step" in r)
    assert 1 <= step["prompts_drawn"] // 2 <= 3 and 0 <= step["groups_kept"] <= 2
    assert step["draw_bound_hit"] == float(step["groups_kept"] < 2)
    assert json.load(open(tmp_path / "final_eval.json"))["algo"] == algo
